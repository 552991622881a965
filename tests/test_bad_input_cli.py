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
        ("1", "--frames: expected a whole number >= 2 .*compares frames.*, got 1"),
        ("0", "--frames: expected a whole number >= 2 .*, got 0"),
        ("-3", "--frames: expected a whole number >= 2 .*, got -3"),
        ("abc", "--frames: expected a whole number >= 2 .*, got 'abc'"),
        ("2.5", "--frames: expected a whole number >= 2 .*, got '2.5'"),
    ],
)
def test_bad_frame_counts(capsys, tmp_path, frames, message):
    code, line = run(capsys, "study", "--out", str(tmp_path), "--frames", frames)
    assert code == 2
    assert line.startswith("tl-video study: error: ")
    assert re.search(message, line), line


def test_out_is_an_existing_file(capsys, tmp_path):
    existing = tmp_path / "result.json"
    existing.write_text("{}")
    code, line = run(capsys, "study", "--out", str(existing))
    assert code == 2 and "is an existing file, not a folder" in line


def test_out_cannot_be_created(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, line = run(capsys, "study", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot be written" in line and "pass a writable folder" in line


def test_corrupt_weights(capsys, tmp_path, tiny_checkpoint):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, line = run(capsys, "gen-prob", "--out", str(tmp_path / "out"), "--model", str(folder), "--n", "1", "--quiet")
    assert code == 2 and f"{weights} is not a readable safetensors file" in line


def test_unknown_options_and_commands(capsys):
    assert run(capsys, "study", "--bogus")[0] == 2
    code, line = run(capsys, "frobnicate")
    assert code == 2 and "invalid choice: 'frobnicate'" in line
    code, line = run(capsys)
    assert code == 2 and "required: command" in line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        main(["--debug", "gen-prob", "--out", str(tmp_path), "--model", str(tmp_path / "missing"), "--n", "1", "--quiet"])
    with pytest.raises(FileNotFoundError):
        main(["gen-prob", "--debug", "--out", str(tmp_path), "--model", str(tmp_path / "missing"), "--n", "1", "--quiet"])


def test_console_script_exit_code_and_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tl_video.cli", "study", "--frames", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("tl-video study: error:")
