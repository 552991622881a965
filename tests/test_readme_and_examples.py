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


def test_readme_commands_parse_and_the_config_example_runs(tmp_path, monkeypatch):
    """Every `tl-video` command of the README is valid as written; the config-file example runs end to end."""
    import shlex

    from tl_video.cli import build_parser, main
    from tl_video.study_cli import settings_from_args

    monkeypatch.chdir(tmp_path)
    text = README.read_text()
    for block in re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL):
        name = block.splitlines()[0].lstrip("# ").strip()  # each TOML example names its file on its first line
        (tmp_path / name).write_text(block)
    commands = [
        shlex.split(part.strip())
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
        for line in block.splitlines()
        for part in line.split("&&")
        if part.strip().startswith("tl-video ")
    ]
    assert any(argv[1:] == ["study", "--out", "study"] for argv in commands), "the set-up command runs the study"
    for argv in commands:
        settings_from_args(build_parser().parse_args(argv[1:]), argv[1:])  # options valid, before any data or model
    small = next(argv for argv in commands if "--config" in argv)
    assert main([*small[1:], "--quiet"]) == 0
    assert (tmp_path / "small" / "report.html").is_file() and (tmp_path / "small" / "patching.jsonl").is_file()
