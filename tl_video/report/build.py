"""Assemble `report.html` from a run folder: run.json, each analysis's records, figures and findings."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from tl_video.analyses.study import ALL_ANALYSES, ANALYSES, REPORT_FILE, RUN_FILE, Analysis, read_run_info
from tl_video.report.page import escape, facts, figure, page, table


@dataclass
class Section:
    """What the report shows for one analysis."""

    analysis: Analysis
    status: str  # done | failed | missing | pending | interrupted
    error: str | None = None
    header: Any = None
    findings: list[Any] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    baseline: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # examples that could not be analysed, with reasons
    problems: list[str] = field(default_factory=list)  # parts that could not be drawn, one line each


def write_report(run_dir: str | Path, path: str | Path | None = None, *, figures: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write the report of ``run_dir`` to ``path`` (default ``run_dir/report.html``) and return its path.

    ``figures``: figures already drawn, by analysis (`run_study` passes its own); the rest are drawn here.
    """
    run_dir = Path(run_dir)
    target = Path(path) if path is not None else run_dir / REPORT_FILE
    text = build_report(run_dir, figures=figures)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


def build_report(run_dir: str | Path, *, figures: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The report of ``run_dir`` as one HTML document (``figures``: already drawn, by analysis)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    info = read_run_info(run_dir) if (run_dir / RUN_FILE).is_file() else {}
    drawn = figures or {}
    sections = [_section(run_dir, ANALYSES[name], info, drawn.get(name)) for name in _analyses_of(run_dir, info)]
    if not sections:
        raise FileNotFoundError(f"{run_dir} holds no study records (no run.json and no <analysis>.jsonl); run `tl-video study --out {run_dir}` first")
    title = _title(info, sections)
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="subtitle">{escape(_subtitle(info))}</p>',
        _nav(sections),
        _overview(info, sections),
        _baseline_tables(sections),
        _findings(sections),
        *(_analysis_html(section, index) for index, section in enumerate(sections)),
        _details(info, sections),
    ]
    return page(title, "\n".join(body))


# ----------------------------------------------------------------------------- reading


def _analyses_of(run_dir: Path, info: dict[str, Any]) -> list[str]:
    if info.get("analyses"):
        return [name for name in ALL_ANALYSES if name in info["analyses"]]
    names = []
    for name in ALL_ANALYSES:
        try:
            pipeline = ANALYSES[name].load()
        except ImportError:
            continue
        if (run_dir / f"{pipeline.record_name}.jsonl").is_file():
            names.append(name)
    return names


def _section(run_dir: Path, analysis: Analysis, info: dict[str, Any], figures: Mapping[str, Any] | None = None) -> Section:
    run = info.get("analyses", {}).get(analysis.name, {})
    section = Section(analysis, run.get("status", "done"), run.get("error"))
    try:
        pipeline = analysis.load()
    except ImportError as error:
        section.status, section.error = "failed", str(error)
        return section
    if not (run_dir / f"{pipeline.record_name}.jsonl").is_file():
        if section.status == "done":
            section.status = "missing"
        return section
    try:
        result = pipeline.read(run_dir)
    except Exception as error:  # noqa: BLE001 - a broken file is reported, the rest of the report still shows
        section.status, section.error = "failed", f"records could not be read: {_one_line(error)}"
        return section
    section.header = result.header
    section.baseline = [r for r in result.records if r.get("kind") == "baseline"]
    section.skipped = [r for r in result.records if r.get("kind") == "skipped"]
    for part, build in (("findings", result.findings), ("figures", lambda: figures if figures is not None else pipeline.figures(result)),
                        ("tables", getattr(result, "tables", dict))):
        try:
            setattr(section, part, list(build()) if part == "findings" else dict(build()))
        except Exception as error:  # noqa: BLE001 - e.g. too few examples for a statistic
            section.problems.append(f"{part}: {_one_line(error)}")
    return section


# ----------------------------------------------------------------------------- page parts


def _title(info: dict[str, Any], sections: list[Section]) -> str:
    model = info.get("model", {}).get("id") or next((s.header.model_id for s in sections if s.header), "a model")
    return f"Information-flow study of {model}"


def _subtitle(info: dict[str, Any]) -> str:
    data = info.get("data", {})
    when = info.get("finished") or info.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = []
    if data:
        parts.append(f"{data.get('n_examples', '?')} examples of {data.get('name', 'the data')}")
    parts.append(f"written {when[:16].replace('T', ' ')} UTC")
    return "; ".join(parts)


def _nav(sections: list[Section]) -> str:
    links = ['<a href="#findings">Findings</a>'] + [f'<a href="#{s.analysis.name}">{escape(s.analysis.title)}</a>' for s in sections]
    return "<nav>" + "".join(links) + '<a href="#details">Run details</a></nav>'


def _overview(info: dict[str, Any], sections: list[Section]) -> str:
    model = info.get("model", {})
    data = info.get("data", {})
    options = info.get("options", {})
    items = []
    if info.get("command"):
        items.append(("command", f"<pre>{escape(info['command'])}</pre>"))
    if model:
        items.append(("model", escape(f"{model.get('id')} ({model.get('n_layers')} layers, d_model {model.get('d_model')}) "
                                      f"on {model.get('device')}, {model.get('dtype')}")))
    if data:
        per_task = ", ".join(f"{task.replace('_', ' ')} {n}" for task, n in data.get("per_task", {}).items())
        items.append(("data", escape(f"{data.get('name')}: {data.get('n_examples')} examples ({per_task})")))
    if options:
        shown = {k: ("the model's default" if v is None else v) for k, v in options.items() if k != "dataset"}
        items.append(("shared options", escape(", ".join(f"{k} = {v}" for k, v in shown.items()))))
    if info.get("seconds") is not None:
        items.append(("time", escape(_duration(info["seconds"]) + " for the analyses and figures"
                                     + (" (a resumed run: only what was missing)" if info.get("resumed") else ""))))
    status = ", ".join(f'<span class="status-{escape(s.status)}">{escape(s.analysis.name)}: {escape(s.status)}</span>' for s in sections)
    items.append(("analyses", status))
    return facts(items)


def _findings(sections: list[Section]) -> str:
    parts = ['<h2 id="findings">Findings</h2>',
             '<p class="about">Each sentence is computed from the records; the test, its p-value and the number of '
             'examples follow it. Findings whose test gives p ≥ 0.05 are listed under each analysis, folded.</p>']
    any_finding = False
    for section in sections:
        if not section.findings:
            continue
        any_finding = True
        shown = [f for f in section.findings if f.p_value is None or not f.p_value >= 0.05]
        folded = [f for f in section.findings if f not in shown]
        parts.append(f"<h3>{escape(section.analysis.title)}</h3>")
        if shown:
            parts.append('<ul class="findings">' + "".join(_finding_html(f) for f in shown) + "</ul>")
        if folded:
            parts.append(f"<details><summary>{len(folded)} more without a significant effect (p ≥ 0.05)</summary>"
                         '<ul class="findings">' + "".join(_finding_html(f) for f in folded) + "</ul></details>")
    if not any_finding:
        parts.append("<p>No findings could be stated (no analysis finished with enough examples).</p>")
    return "\n".join(parts)


def _finding_html(finding: Any) -> str:
    p = "" if finding.p_value is None else f", {_p(finding.p_value)}"
    return f'<li>{escape(finding.sentence)} <span class="test">({escape(finding.test)}{escape(p)}, n = {finding.n})</span></li>'


def _analysis_html(section: Section, index: int) -> str:
    analysis = section.analysis
    parts = [f'<h2 id="{analysis.name}">{escape(analysis.title)}</h2>', f'<p class="about">{escape(analysis.about)}</p>']
    if section.error:
        parts.append(f'<p class="error">{escape(section.status)}: {escape(section.error)}</p>')
    elif section.status == "missing":
        parts.append('<p class="error">No records: this analysis did not run.</p>')
    if section.baseline or section.skipped:
        parts.append(_baseline_line(section))
    for problem in section.problems:
        parts.append(f'<p class="error">Not shown: {escape(problem)}</p>')
    if section.figures:
        parts.append('<div class="figures">')
        for number, (name, fig) in enumerate(section.figures.items()):
            parts.append(figure(fig, f"fig-{analysis.name}-{number}", f"figures/{name}"))
        parts.append("</div>")
    for title, rows in section.tables.items():
        if rows:
            header = list(rows[0])
            numeric = [all(isinstance(r.get(h), (int, float)) for r in rows) for h in header]
            parts.append(f"<h3>{escape(title)}</h3>" + table(header, ([_cell(r.get(h)) for h in header] for r in rows), numeric=numeric))
    return "\n".join(parts)


def _baseline_line(section: Section) -> str:
    """One sentence with this analysis's denominators (the per-task table is at the top)."""
    n = len(section.baseline)
    correct = sum(bool(r.get("correct")) for r in section.baseline)
    analysed = sum(bool(r.get("selected")) for r in section.baseline)
    samples = (section.header.options or {}).get("samples", "correct") if section.header else "correct"
    skipped = ""
    if section.skipped:
        reasons = "; ".join(f"{r['example_id']}: {r['reason']}" for r in section.skipped[:5])
        more = f"; and {len(section.skipped) - 5} more" if len(section.skipped) > 5 else ""
        skipped = (f" {len(section.skipped)} more example{'s' if len(section.skipped) > 1 else ''} could not be analysed and "
                   f"count in no number ({escape(reasons + more)}).")
    return (f"<p>Analysed {analysed} of {n} examples (samples = <code>{escape(samples)}</code>; answered correctly at "
            f"baseline: {correct}/{n}, {100 * correct / max(n, 1):.0f}%).{skipped}</p>")


def _baseline_tables(sections: list[Section]) -> str:
    """Baseline accuracy per task with denominators: once when every analysis shares its examples, else per analysis."""
    tables = {s.analysis.name: _baseline_table(s) for s in sections if s.baseline}
    if not tables:
        return ""
    if len(set(tables.values())) == 1:
        return '<h3 id="baseline">Baseline answers</h3>' + next(iter(tables.values()))
    return '<h3 id="baseline">Baseline answers</h3>' + "".join(
        f"<h4>{escape(ANALYSES[name].title)}</h4>{table_html}" for name, table_html in tables.items()
    )


def _baseline_table(section: Section) -> str:
    """Baseline accuracy per task with its denominator, and how many examples were analysed."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for record in section.baseline:
        for task in (record.get("task", "all"), "all tasks"):
            counts[task][0] += 1
            counts[task][1] += bool(record.get("correct"))
            counts[task][2] += bool(record.get("selected"))
    samples = (section.header.options or {}).get("samples", "correct") if section.header else "correct"
    order = [task for task in counts if task != "all tasks"] + ["all tasks"]
    rows = [
        (task.replace("_", " "), n, f"{correct}/{n} ({100 * correct / n:.0f}%)", selected)
        for task, (n, correct, selected) in ((task, counts[task]) for task in order)
    ]
    which = {"correct": "those answered correctly", "wrong": "those answered wrongly"}.get(samples, "all of them")
    caption = f"<p>The analysed examples are {which} (samples = <code>{escape(samples)}</code>).</p>"
    return caption + table(["task", "examples", "answered correctly", "analysed"], rows, numeric=[False, True, True, True])


def _details(info: dict[str, Any], sections: list[Section]) -> str:
    parts = ['<h2 id="details">Run details</h2>']
    runs = info.get("analyses", {})
    if runs:
        rows = [
            (name, run.get("status"), run.get("n_records"), run.get("n_resumed"), f"{run.get('seconds', 0):.1f}",
             f"{run.get('figure_seconds', 0):.1f}", run.get("error") or "")
            for name, run in runs.items()
        ]
        parts.append("<h3>Timings</h3>" + table(
            ["analysis", "status", "records", "resumed", "compute (s)", "figures (s)", "error"], rows,
            numeric=[False, False, True, True, True, True, False],
        ))
        parts.append(f"<p>Total wall time {escape(_duration(info.get('seconds', 0)))}, including loading the data and writing figures.</p>")
    if info.get("versions"):
        parts.append("<h3>Versions</h3>" + table(["package", "version"], info["versions"].items()))
    if info.get("machine"):
        parts.append("<h3>Machine</h3>" + table(["", ""], info["machine"].items()))
    parts.append("<h3>Options and record files</h3>")
    for section in sections:
        if section.header is None:
            continue
        header = section.header
        text = json.dumps({"record file": runs.get(section.analysis.name, {}).get("record_file"), "model_id": header.model_id,
                           "model_config_hash": header.model_config_hash, "dataset": header.dataset, "seed": header.seed,
                           "tl_video_version": header.tl_video_version, "options": header.options}, indent=2)
        parts.append(f"<details><summary>{escape(section.analysis.title)}</summary><pre>{escape(text)}</pre></details>")
    return "\n".join(parts)


def _cell(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def _p(value: float) -> str:
    if value != value:  # NaN: too few examples for the test
        return "p not defined"
    return "p < 0.001" if value < 1e-3 else f"p = {value:.3f}"


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
