"""The README's main job runs end to end through the console entry point: real mp4 files, model, records, report."""

from __future__ import annotations

import json

from tl_video.analyses.records import read_records
from tl_video.cli import main


def test_patch_command_on_the_builtin_model_and_a_generated_benchmark(tmp_path, capsys):
    """`tl-video patch` with no --data renders the synthetic benchmark into OUT/data and patches clean vs corrupted."""
    out = tmp_path / "run"
    assert main(["patch", "--out", str(out), "--n", "1", "--tasks", "moving_direction", "--formats", "html", "--quiet"]) == 0
    assert (out / "data" / "examples.jsonl").is_file() and list((out / "data" / "videos").glob("*.mp4"))
    header, records = read_records(out / "patching.jsonl")
    assert header.model_id == "tl-video/toy-temporal" and header.dataset.startswith("synthetic:")
    assert [r["kind"] for r in records][0] == "baseline"
    run = json.loads((out / "run.json").read_text())
    assert run["analyses"]["patch"]["status"] == "done" and (out / "report.html").is_file()
    stdout = capsys.readouterr().out
    assert "patching.jsonl" in stdout and "report.html" in stdout


def test_bad_model_path_is_a_clear_error(tmp_path, capsys):
    assert main(["gen-prob", "--out", str(tmp_path), "--model", str(tmp_path / "missing"), "--n", "1", "--quiet"]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err
