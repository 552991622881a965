"""Benchmarks of tl_video against the HF model (run `python benchmarks/run.py`)."""
