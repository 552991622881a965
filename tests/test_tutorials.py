"""Every tutorial runs as written (as a script, on the built-in model) and computes what it says it does.

Each tutorial writes `NN_summary.json` into `$TL_VIDEO_TUTORIAL_OUT`; the checks below read it.
Figures are saved, never shown (a script has no notebook to show them in).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"


def run_tutorial(name: str, tmp_path: Path) -> tuple[dict, Path, str]:
    """Run `tutorials/<name>` in a fresh folder; return its summary, its output folder and its stdout."""
    out = tmp_path / "out"
    env = os.environ | {
        "TL_VIDEO_TUTORIAL_OUT": str(out),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # tiny matrices: one thread is fastest, and does not fight other jobs for cores
        "PLOTLY_RENDERER": "json",  # belt and braces: no figure may try to open a browser
        "MPLBACKEND": "Agg",
    }
    proc = subprocess.run([sys.executable, str(TUTORIALS / name)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    summary = json.loads((out / f"{name[:2]}_summary.json").read_text())
    return summary, out, proc.stdout


def figures(out: Path) -> set[str]:
    return {path.name for path in (out / "figures").iterdir()}


def test_every_tutorial_is_tested():
    tested = {name for name in globals() if name.startswith("test_tutorial_")}
    for script in sorted(TUTORIALS.glob("[0-9][0-9]_*.py")):
        assert f"test_tutorial_{script.name[:2]}" in tested, f"{script.name} has no test"


def test_tutorial_01(tmp_path):
    summary, out, stdout = run_tutorial("01_transformer_lens_on_a_videollm.py", tmp_path)
    assert summary["answer"] == summary["true_answer"]
    assert math.isclose(summary["logit_diff"], summary["sum_of_component_attributions"], rel_tol=1e-3, abs_tol=1e-3)
    assert summary["video_label_example"] == "<video f3 r0 c0>"
    assert len(summary["by_frame"]) == 6 and len(summary["by_frame"][0]) == summary["n_video_tokens"] == 8
    assert {"01_frames.html", "01_dla_by_frame.html", "01_decomposition.html"} <= figures(out)


def test_tutorial_02(tmp_path):
    summary, out, stdout = run_tutorial("02_activation_patching.py", tmp_path)
    assert summary["clean_metric"] > 0 > summary["corrupted_metric"]  # reversing the clip flips the answer
    # patching the whole video at the first layer restores the clean run: recovery 1
    assert summary["recovery_first_layer_all_video"] == pytest.approx(1.0, abs=1e-3)
    counts = summary["pipeline_counts"]
    assert set(counts) == {"reverse", "shuffle(seed=0)", "freeze(index=0)"} and counts["reverse"]["n"] >= 3
    assert len(summary["pipeline_mean_recovery_reverse"]) == 6
    assert summary["tl_stats_examples"] == 3 and 0.5 < summary["tl_stats_best_mean"] <= 1.2  # some frame and layer restore it
    assert (tmp_path / "out" / "reversed.mp4").is_file() and "02_layer_by_frame.html" in figures(out)
    assert "Under reverse" in stdout  # the pipeline's finding


def test_tutorial_03(tmp_path):
    summary, out, stdout = run_tutorial("03_attention_knockout_and_information_flow.py", tmp_path)
    curves = summary["flow_curves"]
    assert {"Video↛Question", "Question↛Last", "Video↛Last", "Last↛Last"} <= set(curves)
    assert min(min(curve) for curve in curves.values()) < -5  # some flow matters
    assert summary["exact_equals_plain"] and "03_flow_vql-to-ql_center.html" in figures(out)
    # the gradient screen ranks windows in the same direction as the exact sweep, and flags some
    assert summary["screen_spearman"] > 0.3 and summary["n_flagged"] > 0
    assert "03_screen_vs_exact.html" in figures(out)


def test_tutorial_04(tmp_path):
    summary, out, stdout = run_tutorial("04_logit_lens_on_video_tokens.py", tmp_path)
    assert summary["letters"] == ["A", "B", "C", "D"]
    assert summary["paper_compat_last_equals_default"]  # both read the model's own output at the last layer
    assert math.isclose(sum(summary["probabilities_last_layer"]), 1.0, abs_tol=0.02)
    assert summary["n_lens_records"] >= 5 and len(summary["bins"]) == 6
    assert {"04_token_grid.html", "04_vocabulary_temporal.html"} <= figures(out)


def test_tutorial_05(tmp_path):
    summary, out, stdout = run_tutorial("05_effective_pathways.py", tmp_path)
    full = summary["accuracy"]["full_attention"]
    assert full[0] == full[1] > 0  # correct-only sample: full attention answers all of them
    assert 0 < summary["kept_fraction"] < 1
    tight = summary["tight_accuracy"]
    assert tight["full_attention"] == full and tight["pathways"][1] == full[1]
    assert summary["tight_kept_percent"] < 100 * summary["kept_fraction"]
    assert "05_edges_vs_accuracy.html" in figures(out)


def test_tutorial_06(tmp_path):
    summary, out, stdout = run_tutorial("06_reproducing_map_the_flow.py", tmp_path)
    assert set(summary["analyses"]) == {"flow", "pathways", "gen-prob", "lens", "attention", "patch"}
    assert set(summary["statuses"].values()) == {"done"}
    assert "flow_vql-to-ql_center.html" in summary["figures"]
    assert (out / "study" / "report.html").is_file()
    assert summary["n_findings"] >= 5 and summary["baseline_correct"] > 0


def test_tutorial_07(tmp_path):
    summary, out, stdout = run_tutorial("07_attention_patterns.py", tmp_path)
    assert summary["labels_video"] == [f"<video f{f} r0 c0>" for f in range(8)]
    assert "<video f0 r1 c1>" in summary["tiny_labels_video"]  # a spatial grid labels rows and columns
    assert all(0 <= mass <= 1 for mass in summary["video_mass_by_layer"])
    assert summary["baseline_per_frame"] != summary["knocked_per_frame"]
    if summary["circuitsvis"]:
        assert (out / "07_circuitsvis_L3.html").read_text().strip()
    assert "07_attention_maps.html" in figures(out)


def test_tutorial_08(tmp_path):
    summary, out, stdout = run_tutorial("08_adding_a_videollm_family.py", tmp_path)
    assert summary["max_logit_difference"] < 1e-4
    assert summary["family"] == "llava_next_video" and summary["n_video_tokens"] > 0
