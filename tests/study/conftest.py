"""Shared fixtures of the study tests: the built-in model and a tiny synthetic benchmark, once per session.

`toy_model` is `tl-video/toy-temporal` loaded through the public path; `study_examples` is the
synthetic benchmark at its smallest (2 examples per task, 8 frames of 32x32 pixels), rendered
once into `study_benchmark_dir` (real mp4 files plus `examples.jsonl`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tl_video.data.synthetic import generate_benchmark
from tl_video.model.hooked_video_transformer import HookedVideoTransformer

TOY_MODEL = "tl-video/toy-temporal"


@pytest.fixture(scope="session")
def toy_model() -> HookedVideoTransformer:
    """The built-in trained model (6 layers, answers the synthetic tasks at 98-100%).

    Torch runs on one thread from here on: on a 1.3M-parameter model a second thread only adds
    synchronisation, and on a busy machine it makes each forward 10-20x slower (as `tl-video` does
    for the built-in model).
    """
    torch.set_num_threads(1)
    return HookedVideoTransformer.from_pretrained(TOY_MODEL)


@pytest.fixture(scope="session")
def study_benchmark_dir(tmp_path_factory) -> Path:
    """Folder holding the tiny synthetic benchmark: ``videos/`` and ``examples.jsonl``."""
    folder = tmp_path_factory.mktemp("study_benchmark")
    generate_benchmark(folder, n_per_task=2, num_frames=8, size=32)
    return folder


@pytest.fixture(scope="session")
def study_examples(study_benchmark_dir):
    """The tiny benchmark's examples (10: 2 per task), read back through the JSONL reader."""
    from tl_video.data import read_jsonl

    return tuple(read_jsonl(study_benchmark_dir / "examples.jsonl"))
