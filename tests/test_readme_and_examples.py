"""The README's Python examples run as written; examples from the synthetic benchmark prepare end to end."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tl_video.data import generate_benchmark
from tl_video.prompts import prepare_example
from tl_video.prompts.answers import option_token_ids

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own documentation


def test_synthetic_examples_prepare_with_answer_tokens(model, tmp_path):
    examples = generate_benchmark(tmp_path, n_per_task=1, seed=0, num_frames=8, size=64)
    assert {example.task for example in examples} >= {"moving_direction", "scene_transition"}
    for example in examples:
        prepared = prepare_example(model, example, num_frames=4)
        assert prepared.layout.true_option == example.answer_letter
        tokens = option_token_ids(model.tokenizer, prepared)
        assert list(tokens) == list(example.option_letters)
        assert model.to_string(prepared.tokens[0, prepared.layout.positions("true_option")]).startswith(
            f"({example.answer_letter}) "
        )
        with torch.no_grad():
            assert torch.isfinite(model(prepared.tokens)).all()
