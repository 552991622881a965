"""The README's main job runs end to end: real mp4 written and decoded, model, cache, patching."""

from __future__ import annotations

import json

from tl_video.cli import main
from tl_video.loading.checkpoint import BUILTIN_MODELS


def test_demo_command_writes_results(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--frames", "4"]) == 0
    result = json.loads((tmp_path / "demo_result.json").read_text())
    builtin_installed = (BUILTIN_MODELS["tl-video/toy-temporal"] / "config.json").is_file()
    assert result["model_is_random"] is (not builtin_installed)
    assert result["n_frames"] == 4 and result["n_video_tokens"] % 4 == 0
    table = result["patch_recovery_by_layer_and_frame"]
    assert len(table) >= 2 and all(len(row) == 4 for row in table)
    assert "clean - reversed logit" in capsys.readouterr().out


def test_bad_model_path_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--model", str(tmp_path / "missing")]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err
