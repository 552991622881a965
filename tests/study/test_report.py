"""report.html: self-contained, every figure drawn by a real browser, findings and denominators stated."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from tl_video.analyses.scoring import StudyOptions
from tl_video.analyses.study import ANALYSES, STUDY_ORDER, StudyFailed, run_study
from tl_video.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHEAP = {  # the smallest options of each pipeline that still draw every figure
    "flow": {"presets": ("cross-frame", "vql-to-ql")},  # pathways finds its ranges from these curves
    "patch": {"corruptions": ({"name": "reverse"},)},
}


def available(name: str) -> bool:
    try:
        ANALYSES[name].load()
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def study_run(toy_model, study_examples, tmp_path_factory):
    """A study of every available analysis on 2 examples of 2 tasks (HTML figures only: PNG export is the slow part)."""
    out = tmp_path_factory.mktemp("study")
    names = [name for name in STUDY_ORDER if available(name)]
    options = {name: CHEAP[name] for name in names if name in CHEAP}
    run = run_study(toy_model, study_examples[::5][:2], StudyOptions(dataset="tiny synthetic"), out_dir=out, analyses=names,
                    pipeline_options=options, progress=False, formats=("html",), command="tl-video study --out x")
    return run


def dump_dom(path, tmp_path) -> str:
    """The DOM after the page's scripts ran, from headless Chromium (no network, throwaway profile)."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=20000", "--dump-dom", path.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True).stdout


def test_report_is_self_contained(study_run):
    text = study_run.report.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text), "a script is loaded from elsewhere; the report must work offline"
    assert not re.search(r"<link[^>]+href=", text)
    assert text.count("Plotly.newPlot") >= 1 and text.count("plotly.js v") == 1  # plotly.js embedded once


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run installs it)")
def test_every_figure_renders_in_a_browser(study_run, tmp_path):
    text = study_run.report.read_text(encoding="utf-8")
    n_figures = len(re.findall(r'<div id="fig-[^"]+" class="plotly-graph-div"', text))
    assert n_figures == sum(len(fs) for fs in _figures_by_analysis(study_run).values()) >= len(study_run.results)
    dom = dump_dom(study_run.report, tmp_path)
    drawn = re.findall(r'<div id="(fig-[^"]+)" class="[^"]*js-plotly-plot', dom)
    assert len(drawn) == n_figures, "a figure div was not drawn by plotly.js"
    assert dom.count('class="main-svg"') >= 2 * n_figures


def test_report_states_findings_denominators_command_and_timings(study_run):
    text = html.unescape(study_run.report.read_text(encoding="utf-8"))
    for name, result in study_run.results.items():
        assert f'id="{name}"' in text
        for finding in result.findings():
            assert finding.sentence in text
            assert f"n = {finding.n}" in text
    assert "answered correctly" in text and re.search(r"\d+/\d+ \(\d+%\)", text)  # every accuracy with its denominator
    assert "tl-video study --out x" in text
    run = json.loads((study_run.out_dir / "run.json").read_text())
    assert set(run["analyses"]) == set(study_run.results)
    for name, entry in run["analyses"].items():
        assert entry["status"] == "done" and entry["seconds"] > 0 and entry["n_records"] > 0
        assert entry["figures"] and all((study_run.out_dir / f).is_file() for f in entry["figures"])
    assert run["versions"]["tl_video"] and run["model"]["dtype"] == "float32"


def test_report_is_rebuilt_from_records_alone(study_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(study_run.out_dir, copy, ignore=shutil.ignore_patterns("run.json", "report.html", "figures"))
    text = write_report(copy).read_text(encoding="utf-8")
    for name in study_run.results:
        assert f'<h2 id="{name}">' in text


def test_a_failing_analysis_is_reported_and_the_others_still_run(toy_model, study_examples, tmp_path):
    with pytest.raises(StudyFailed, match=r"1 of 2 analyses failed \(flow: .*layers"):
        run_study(toy_model, study_examples[:1], StudyOptions(), out_dir=tmp_path, analyses=["flow", "gen-prob"],
                  pipeline_options={"flow": {"layers": (99,)}}, progress=False, formats=("html",))
    text = html.unescape((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert "failed:" in text and 'id="gen-prob"' in text
    assert json.loads((tmp_path / "run.json").read_text())["analyses"]["gen-prob"]["status"] == "done"


def _figures_by_analysis(run) -> dict[str, list[str]]:
    return {name: [f for f in entry.figures if f.endswith(".html")] for name, entry in run.analyses.items()}
