"""Every CLI failure ends in one line on stderr and a non-zero exit; `--debug` shows the traceback."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tl_video.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return code, err[0]


@pytest.mark.parametrize(
    "frames, message",
    [
        ("1", "--frames: 1 is below the minimum 2 .*at least 2 frames"),
        ("0", "--frames: 0 is below the minimum 2"),
        ("-3", "--frames: -3 is below the minimum 2"),
        ("abc", "--frames: 'abc' is not a whole number"),
        ("2.5", "--frames: '2.5' is not a whole number"),
    ],
)
def test_bad_frame_counts(capsys, tmp_path, frames, message):
    code, line = run(capsys, "demo", "--out", str(tmp_path), "--frames", frames)
    assert code == 2
    assert line.startswith("tl-video demo: error: argument ")
    assert re.search(message, line), line


def test_demo_refuses_one_frame_as_a_library_call_too(tmp_path):
    from tl_video.demo import run_demo

    with pytest.raises(ValueError, match="at least 2 frames"):
        run_demo(None, tmp_path, n_frames=1)


def test_out_is_an_existing_file(capsys, tmp_path):
    existing = tmp_path / "result.json"
    existing.write_text("{}")
    code, line = run(capsys, "demo", "--out", str(existing))
    assert code == 2 and "is an existing file, not a folder" in line


def test_out_cannot_be_created(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, line = run(capsys, "demo", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot be written" in line and "pass a writable folder" in line


def test_corrupt_weights(capsys, tmp_path, tiny_checkpoint):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, line = run(capsys, "demo", "--out", str(tmp_path / "out"), "--model", str(folder))
    assert code == 2 and f"{weights} is not a readable safetensors file" in line


def test_unknown_options_and_commands(capsys):
    assert run(capsys, "demo", "--bogus")[0] == 2
    code, line = run(capsys, "frobnicate")
    assert code == 2 and "invalid choice: 'frobnicate'" in line
    code, line = run(capsys)
    assert code == 2 and "required: command" in line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        main(["--debug", "demo", "--out", str(tmp_path), "--model", str(tmp_path / "missing")])
    with pytest.raises(FileNotFoundError):
        main(["demo", "--debug", "--out", str(tmp_path), "--model", str(tmp_path / "missing")])


def test_console_script_exit_code_and_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tl_video.cli", "demo", "--frames", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("tl-video demo: error:")
