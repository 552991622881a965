"""`tl-video study` and the per-pipeline commands: options from the command line and config files, one-line errors."""

from __future__ import annotations

import json

import pytest

from tl_video.analyses.records import read_records
from tl_video.cli import main


def fails_with(capsys, argv: list[str], *fragments: str, code: int = 2) -> str:
    """Run ``argv``; it must exit with ``code`` and print exactly one error line containing every fragment."""
    assert main(argv) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    line = err[-1]
    assert line.startswith(f"tl-video {argv[0]}: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--samples", "right"], ["--samples: 'right' is not one of correct, all, wrong"]),
        (["--n", "0"], ["--n: expected a whole number >= 1, got 0"]),
        (["--frames", "eight"], ["--frames: expected a whole number >= 2", "got 'eight'"]),
        (["--prompt-style", "llava"], ["--prompt-style: 'llava' is not one of chat, paper"]),
        (["--dtype", "float64"], ["--dtype: 'float64' is not one of float32, bfloat16, float16"]),
        (["--formats", "png,gif"], ["--formats gif: not a figure format; valid: html, png, pdf, svg"]),
        (["--analyses", "flow,lens,magic"], ["analyses ['magic']: choose from flow, pathways, gen-prob"]),
        (["--video-root", "videos"], ["--video-root needs --data"]),
        (["--device", "tpu"], ["--device 'tpu': expected cpu, cuda, cuda:N or mps"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_bad_options_end_in_one_clear_line(tmp_path, capsys, extra, fragments):
    fails_with(capsys, ["study", "--out", str(tmp_path / "run"), *extra], *fragments)


def test_unreadable_data_ends_in_one_clear_line(tmp_path, capsys):
    fails_with(capsys, ["flow", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "missing.jsonl")],
               "--data", "missing.jsonl: no such file or folder")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"example_id": "a", "video": "nowhere.mp4", "question": "q?", "options": ["x", "y"], "answer_index": 5}\n')
    fails_with(capsys, ["flow", "--out", str(tmp_path / "run"), "--data", str(bad)], "bad.jsonl")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fails_with(capsys, ["flow", "--out", str(tmp_path / "run"), "--data", str(text)], "expected a .jsonl or .json file")


def test_options_that_do_not_apply_are_refused(tmp_path, capsys, study_benchmark_dir):
    fails_with(capsys, ["gen-prob", "--out", str(tmp_path / "run"), "--window", "3"], "--window does not apply to gen-prob")
    fails_with(capsys, ["flow", "--out", str(tmp_path / "run"), "--data", str(study_benchmark_dir), "--tasks", "juggling"],
               "--tasks juggling: no such task", "moving_direction")


def test_config_file_unknown_keys_and_bad_values_are_errors(tmp_path, capsys):
    config = tmp_path / "study.json"
    config.write_text(json.dumps({"samples": "all", "windw": 3}))
    fails_with(capsys, ["study", "--out", str(tmp_path / "run"), "--config", str(config)], "unknown option 'windw'", "window")
    config.write_text(json.dumps({"n": "many"}))
    fails_with(capsys, ["study", "--out", str(tmp_path / "run"), "--config", str(config)], "study.json: n: expected a whole number")
    config.write_text(json.dumps({"flow": {"window_k": 2, "centre": 3}}))
    fails_with(capsys, ["study", "--out", str(tmp_path / "run"), "--config", str(config)], "flow: unknown option 'centre'", "window_k")
    config.write_text(json.dumps({"flow": {"presets": ["vql-to-ql", "everything"]}}))
    fails_with(capsys, ["study", "--out", str(tmp_path / "run"), "--config", str(config)], "unknown ['everything']")
    toml = tmp_path / "study.toml"
    toml.write_text("samples = \n")
    fails_with(capsys, ["study", "--out", str(tmp_path / "run"), "--config", str(toml)], "not valid TOML")


def test_config_file_and_command_line_merge(tmp_path):
    from tl_video.cli import build_parser
    from tl_video.study_cli import settings_from_args

    config = tmp_path / "study.toml"
    config.write_text('samples = "all"\nn = 3\npresets = ["vql-to-ql"]\n\n[flow]\nlayers = [0, 1]\n\n[gen-prob]\nreadouts = ["final_norm"]\n')
    argv = ["study", "--out", str(tmp_path / "run"), "--config", str(config), "--n", "2", "--window", "3"]
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args, argv)
    assert settings.values["samples"] == "all" and settings.values["n"] == 2  # the command line wins
    assert settings.pipeline_options["flow"] == {"layers": [0, 1], "presets": ("vql-to-ql",), "window_k": 3}
    assert settings.pipeline_options["gen-prob"] == {"readouts": ["final_norm"]}
    assert settings.command == "tl-video " + " ".join(argv)


def test_flow_command_writes_records_report_and_resumes(tmp_path, capsys, study_benchmark_dir):
    out = tmp_path / "run"
    argv = ["flow", "--out", str(out), "--data", str(study_benchmark_dir / "examples.jsonl"), "--tasks", "moving_direction",
            "--n", "1", "--presets", "vql-to-ql", "--formats", "html", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "flow.jsonl" in captured.out and "report.html" in captured.out
    assert captured.err == ""  # --quiet: no progress bars, not even transformers' own
    header, records = read_records(out / "flow.jsonl")
    assert header.options["presets"] == ["vql-to-ql"] and "tasks=moving_direction n=1" in header.dataset
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "tl-video " + " ".join(argv)
    assert run["analyses"]["flow"]["status"] == "done" and run["analyses"]["flow"]["n_records"] == len(records)
    assert run["model"]["id"] == "tl-video/toy-temporal" and run["versions"]["torch"]
    assert (out / "report.html").is_file() and all(p.endswith(".html") for p in run["analyses"]["flow"]["figures"])

    line = fails_with(capsys, argv, "flow.jsonl already holds results", "--resume")
    assert "Traceback" not in line
    assert main([*argv, "--resume"]) == 0
    assert read_records(out / "flow.jsonl")[1] == records  # nothing recomputed, nothing duplicated
    resumed = json.loads((out / "run.json").read_text())
    assert resumed["resumed"] and resumed["analyses"]["flow"]["n_resumed"] == len(records)
    other = [word if word != "vql-to-ql" else "cross-frame" for word in argv]
    fails_with(capsys, [*other, "--resume"], "flow: ValueError: cannot resume", "options", code=1)
    assert read_records(out / "flow.jsonl")[1] == records


def test_report_command_rebuilds_the_report(tmp_path, capsys):
    fails_with(capsys, ["report", str(tmp_path / "nothing")], "run folder not found")
    fails_with(capsys, ["report", str(tmp_path)], "holds no study records")


@pytest.mark.slow
def test_default_study_finishes_within_ten_minutes(tmp_path):
    """The README's main job, as a user runs it: `tl-video study --out study` (built-in model, generated data)."""
    import subprocess
    import sys
    import time

    begin = time.time()
    done = subprocess.run([sys.executable, "-m", "tl_video.cli", "study", "--out", str(tmp_path / "study")],
                          capture_output=True, text=True, timeout=900)
    seconds = time.time() - begin
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads((tmp_path / "study" / "run.json").read_text())
    assert all(entry["status"] == "done" for entry in run["analyses"].values()) and len(run["analyses"]) == 6
    assert (tmp_path / "study" / "report.html").is_file()
    assert seconds < 600, f"the default study took {seconds:.0f} s on this machine"


def test_every_registered_analysis_loads_with_its_options_and_figures():
    """The study finds each pipeline's run function, options, result class and figures by their shared shape."""
    import importlib

    from tl_video.analyses.scoring import StudyOptions
    from tl_video.analyses.study import ALL_ANALYSES, ANALYSES, STUDY_ORDER

    assert STUDY_ORDER == ("flow", "pathways", "gen-prob", "lens", "attention", "patch")
    for name in ALL_ANALYSES:
        pipeline = ANALYSES[name].load()
        options = pipeline.options(StudyOptions(seed=3, samples="all"))
        assert isinstance(options, pipeline.options_class) and options.seed == 3 and options.samples == "all"
        assert hasattr(pipeline.result_class, "read") and hasattr(pipeline.result_class, "findings")
        assert callable(importlib.import_module(ANALYSES[name].plots).figures)


def test_png_figures_when_a_browser_is_present_else_one_line(tmp_path, capsys, study_benchmark_dir):
    from tl_video.plots.style import static_export_available

    argv = ["gen-prob", "--out", str(tmp_path / "run"), "--data", str(study_benchmark_dir), "--n", "1", "--tasks", "antonym",
            "--formats", "png"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    pngs = sorted((tmp_path / "run" / "figures").glob("*.png"))
    problem = static_export_available()
    if problem is None:
        assert pngs and all(p.stat().st_size > 10_000 for p in pngs) and "Traceback" not in err
        assert not list((tmp_path / "run" / "figures").glob("*.html"))  # only the formats asked for
    else:
        assert not pngs and f"[study] figures: HTML only; {problem}" in err


def test_n_per_task_is_an_alias_torchrun_cannot_mistake():
    """torchrun reads `--n` as an abbreviation of its own --nnodes/--nproc_per_node; --n-per-task is safe."""
    from tl_video.cli import build_parser
    from tl_video.study_cli import settings_from_args

    argv = ["study", "--out", "x", "--n-per-task", "3"]
    assert settings_from_args(build_parser().parse_args(argv), argv).get("n") == 3
