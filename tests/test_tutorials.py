"""Every tutorial runs as written (as a script, on the built-in model) and computes what it says it does.

Each tutorial writes `NN_summary.json` into `$TL_VIDEO_TUTORIAL_OUT`; the checks below read it.
Figures are saved, never shown (a script has no notebook to show them in).

A tutorial runs in this process, as `python tutorials/NN_*.py` would run it (`runpy.run_path` as
`__main__`, in a fresh namespace, from its own folder on `sys.path`), so that the eight of them do not
each pay ~10 s to import torch, transformers and TransformerLens again. What a script run would start
from (grad mode on, one torch thread, a fresh cwd and argv) is set before it, and whatever process-wide
state a tutorial changes (grad mode, threads, cwd, argv, sys.path, environment, RNGs, progress bars)
is put back after it, so that the tests after it see the process as it was. The one thing the
tutorials share is the headless browser `tutorial_figures.show` keeps open for PNG export: launching
Chromium costs 3 to 7 s, a figure in a running one a fraction of a second. It is closed after the last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
import torch
from transformers.utils import logging as hf_logging

from tl_video.plots import static_export_available

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
SCRIPT_ENV = {"OMP_NUM_THREADS": "1", "PLOTLY_RENDERER": "json", "MPLBACKEND": "Agg"}  # as for a script run


@contextlib.contextmanager
def as_a_fresh_script(script: Path, out: Path, cwd: Path) -> Iterator[None]:
    """Set the process up as `python <script>` started in `cwd` with `$TL_VIDEO_TUTORIAL_OUT=<out>` finds it; restore it after."""
    grad, threads, dtype = torch.is_grad_enabled(), torch.get_num_threads(), torch.get_default_dtype()
    directory, argv, path, environ = os.getcwd(), sys.argv[:], sys.path[:], dict(os.environ)
    numpy_state, renderer = np.random.get_state(), pio.renderers.default
    progress_bars, logging_disabled = hf_logging.is_progress_bar_enabled(), logging.root.manager.disable
    os.environ.update(SCRIPT_ENV, TL_VIDEO_TUTORIAL_OUT=str(out))
    pio.renderers.default = "json"  # what $PLOTLY_RENDERER does at import: no figure may try to open a browser
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1; tiny matrices: one thread is fastest and leaves the other core free
    os.chdir(cwd)
    sys.argv = [str(script)]
    sys.path.insert(0, str(script.parent))  # `from tutorial_figures import ...`, as for a script
    try:
        with torch.random.fork_rng():
            yield
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        os.chdir(directory)
        sys.argv, sys.path[:] = argv, path
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update({key: value for key, value in environ.items() if os.environ.get(key) != value})
        np.random.set_state(numpy_state)
        (hf_logging.enable_progress_bar if progress_bars else hf_logging.disable_progress_bar)()
        logging.disable(logging_disabled)
        pio.renderers.default = renderer


@pytest.fixture(scope="module", autouse=True)
def _close_figure_browser() -> Iterator[None]:
    """Stop the headless browser that `tutorial_figures.show` keeps open for PNG export, after the last tutorial."""
    yield
    if "kaleido" in sys.modules:
        sys.modules["kaleido"].stop_sync_server(silence_warnings=True)


def run_tutorial(name: str | Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, Path, str]:
    """Run `tutorials/<name>` (or the script at a path) in a fresh folder; return its summary, output folder and stdout."""
    out, script = tmp_path / "out", TUTORIALS / name
    name = script.name
    capsys.readouterr()  # the tutorial's own output only
    with as_a_fresh_script(script, out, cwd=tmp_path):
        runpy.run_path(str(script), run_name="__main__")
    stdout = capsys.readouterr().out
    sys.stdout.write(stdout)  # still shown if a check below fails
    summary = json.loads((out / f"{name[:2]}_summary.json").read_text())
    return summary, out, stdout


def figures(out: Path) -> set[str]:
    return {path.name for path in (out / "figures").iterdir()}


def test_every_tutorial_is_tested():
    tested = {name for name in globals() if name.startswith("test_tutorial_")}
    for script in sorted(TUTORIALS.glob("[0-9][0-9]_*.py")):
        assert f"test_tutorial_{script.name[:2]}" in tested, f"{script.name} has no test"


def test_a_tutorial_run_leaves_the_process_as_it_was(tmp_path, capsys):
    """What a script changes for its own process (as every tutorial does) does not leak into the tests after it."""
    script = tmp_path / "99_changes_the_process.py"
    script.write_text(
        "import json, os, pathlib, sys, torch\n"
        "seen = {'grad': torch.is_grad_enabled(), 'threads': torch.get_num_threads(), 'cwd': os.getcwd(), 'argv': sys.argv,\n"
        "        'path': sys.path[0], 'name': __name__}\n"
        "torch.set_grad_enabled(False); torch.set_num_threads(2); torch.set_default_dtype(torch.float64)\n"
        "out = pathlib.Path(os.environ['TL_VIDEO_TUTORIAL_OUT']); out.mkdir()\n"
        "os.environ['TL_VIDEO_SCRATCH'] = '1'; sys.path.append('elsewhere'); os.chdir(out)\n"
        "(out / '99_summary.json').write_text(json.dumps(seen))\n"
        "print('done')\n"
    )
    before = (torch.is_grad_enabled(), torch.get_num_threads(), torch.get_default_dtype(), os.getcwd(), sys.path[:])
    summary, out, stdout = run_tutorial(script, tmp_path, capsys)
    assert summary == {"grad": True, "threads": 1, "cwd": str(tmp_path), "argv": [str(script)], "path": str(tmp_path),
                       "name": "__main__"}
    assert stdout == "done\n" and "TL_VIDEO_SCRATCH" not in os.environ and "TL_VIDEO_TUTORIAL_OUT" not in os.environ
    assert (torch.is_grad_enabled(), torch.get_num_threads(), torch.get_default_dtype(), os.getcwd(), sys.path) == before


def test_tutorial_01(tmp_path, capsys):
    summary, out, stdout = run_tutorial("01_transformer_lens_on_a_videollm.py", tmp_path, capsys)
    assert summary["answer"] == summary["true_answer"]
    assert math.isclose(summary["logit_diff"], summary["sum_of_component_attributions"], rel_tol=1e-3, abs_tol=1e-3)
    assert summary["video_label_example"] == "<video f3 r0 c0>"
    assert len(summary["by_frame"]) == 6 and len(summary["by_frame"][0]) == summary["n_video_tokens"] == 8
    assert {"01_frames.html", "01_dla_by_frame.html", "01_decomposition.html"} <= figures(out)
    if static_export_available() is None:  # every figure also as PNG where Chromium is installed
        assert {"01_frames.png", "01_dla_by_frame.png", "01_decomposition.png"} <= figures(out)


def test_tutorial_02(tmp_path, capsys):
    summary, out, stdout = run_tutorial("02_activation_patching.py", tmp_path, capsys)
    assert summary["clean_metric"] > 0 > summary["corrupted_metric"]  # reversing the clip flips the answer
    # patching the whole video at the first layer restores the clean run: recovery 1
    assert summary["recovery_first_layer_all_video"] == pytest.approx(1.0, abs=1e-3)
    counts = summary["pipeline_counts"]
    assert set(counts) == {"reverse", "shuffle(seed=0)", "freeze(index=0)"} and counts["reverse"]["n"] >= 3
    assert len(summary["pipeline_mean_recovery_reverse"]) == 6
    assert summary["tl_stats_examples"] == 3 and 0.5 < summary["tl_stats_best_mean"] <= 1.2  # some frame and layer restore it
    assert (tmp_path / "out" / "reversed.mp4").is_file() and "02_layer_by_frame.html" in figures(out)
    assert "Under reverse" in stdout  # the pipeline's finding


def test_tutorial_03(tmp_path, capsys):
    summary, out, stdout = run_tutorial("03_attention_knockout_and_information_flow.py", tmp_path, capsys)
    curves = summary["flow_curves"]
    assert {"Video↛Question", "Question↛Last", "Video↛Last", "Last↛Last"} <= set(curves)
    assert min(min(curve) for curve in curves.values()) < -5  # some flow matters
    assert summary["exact_equals_plain"] and "03_flow_vql-to-ql_center.html" in figures(out)
    # the gradient screen ranks windows in the same direction as the exact sweep, and flags some
    assert summary["screen_spearman"] > 0.3 and summary["n_flagged"] > 0
    assert "03_screen_vs_exact.html" in figures(out)


def test_tutorial_04(tmp_path, capsys):
    summary, out, stdout = run_tutorial("04_logit_lens_on_video_tokens.py", tmp_path, capsys)
    assert summary["letters"] == ["A", "B", "C", "D"]
    assert summary["paper_compat_last_equals_default"]  # both read the model's own output at the last layer
    assert math.isclose(sum(summary["probabilities_last_layer"]), 1.0, abs_tol=0.02)
    assert summary["n_lens_records"] >= 5 and len(summary["bins"]) == 6
    assert {"04_token_grid.html", "04_vocabulary_temporal.html"} <= figures(out)


def test_tutorial_05(tmp_path, capsys):
    summary, out, stdout = run_tutorial("05_effective_pathways.py", tmp_path, capsys)
    full = summary["accuracy"]["full_attention"]
    assert full[0] == full[1] > 0  # correct-only sample: full attention answers all of them
    assert 0 < summary["kept_fraction"] < 1
    tight = summary["tight_accuracy"]
    assert tight["full_attention"] == full and tight["pathways"][1] == full[1]
    assert summary["tight_kept_percent"] < 100 * summary["kept_fraction"]
    assert "05_edges_vs_accuracy.html" in figures(out)


def test_tutorial_06(tmp_path, capsys):
    summary, out, stdout = run_tutorial("06_reproducing_map_the_flow.py", tmp_path, capsys)
    assert set(summary["analyses"]) == {"flow", "pathways", "gen-prob", "lens", "attention", "patch"}
    assert set(summary["statuses"].values()) == {"done"}
    assert "flow_vql-to-ql_center.html" in summary["figures"]
    assert (out / "study" / "report.html").is_file()
    assert summary["n_findings"] >= 5 and summary["baseline_correct"] > 0


def test_tutorial_07(tmp_path, capsys):
    summary, out, stdout = run_tutorial("07_attention_patterns.py", tmp_path, capsys)
    assert summary["labels_video"] == [f"<video f{f} r0 c0>" for f in range(8)]
    assert "<video f0 r1 c1>" in summary["tiny_labels_video"]  # a spatial grid labels rows and columns
    assert all(0 <= mass <= 1 for mass in summary["video_mass_by_layer"])
    assert summary["baseline_per_frame"] != summary["knocked_per_frame"]
    if summary["circuitsvis"]:
        assert (out / "07_circuitsvis_L3.html").read_text().strip()
    assert "07_attention_maps.html" in figures(out)


def test_tutorial_08(tmp_path, capsys):
    summary, out, stdout = run_tutorial("08_adding_a_videollm_family.py", tmp_path, capsys)
    assert summary["max_logit_difference"] < 1e-4
    assert summary["family"] == "llava_next_video" and summary["n_video_tokens"] > 0
