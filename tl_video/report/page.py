"""HTML building blocks of the report: escaped text, tables, figures and the page around them.

Everything the page needs is inside it: the stylesheet, and plotly.js once in the head, so a
report opened from disk without a network draws every figure.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

STYLE = """
:root { --ink: #222; --muted: #5b5b5b; --line: #dedede; --accent: #0072B2; --bad: #B8420F; }
* { box-sizing: border-box; }
body { font: 15px/1.5 Arial, Helvetica, sans-serif; color: var(--ink); margin: 0; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; background: #fff; min-height: 100vh; }
h1 { font-size: 26px; margin: 4px 0 2px; }
h2 { font-size: 20px; margin: 40px 0 6px; padding-top: 14px; border-top: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 6px; }
p { margin: 6px 0; }
.subtitle { color: var(--muted); margin: 0 0 14px; }
.about { color: var(--muted); max-width: 900px; }
code, pre { font: 13px/1.45 "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { background: #f3f3f3; border: 1px solid var(--line); padding: 8px 10px; white-space: pre-wrap; word-break: break-all; margin: 6px 0; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
th { font-weight: 600; border-bottom: 2px solid #bbb; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; padding-left: 12px; }
ul.findings { padding-left: 20px; margin: 6px 0 10px; }
ul.findings li { margin: 5px 0; }
.test { color: var(--muted); font-size: 13px; }
.status-done { color: #00734d; } .status-failed, .error { color: var(--bad); } .status-pending, .status-skipped { color: var(--muted); }
.figures { display: flex; flex-wrap: wrap; gap: 18px 26px; align-items: flex-start; margin: 10px 0; }
figure { margin: 0; max-width: 100%; overflow-x: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 2px; }
nav { font-size: 14px; margin: 10px 0 0; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
.facts dt { color: var(--muted); } .facts dd { margin: 0; }
"""


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[bool] | None = None) -> str:
    """A plain table; cells are escaped text, numeric columns right-aligned."""
    numeric = list(numeric or [False] * len(header))
    head = "".join(f'<th class="num">{escape(h)}</th>' if n else f"<th>{escape(h)}</th>" for h, n in zip(header, numeric))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{escape(c)}</td>' if n else f"<td>{escape(c)}</td>" for c, n in zip(row, numeric)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts(items: Iterable[tuple[str, str]]) -> str:
    """A two-column list of labelled facts (label: escaped text; value: HTML)."""
    return '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def figure(fig: Any, div_id: str, caption: str | None = None) -> str:
    """A plotly figure as a div drawn by the page's one copy of plotly.js."""
    import plotly.io as pio

    body = pio.to_html(
        fig, full_html=False, include_plotlyjs=False, div_id=div_id,
        config={"displayModeBar": False, "responsive": False},  # no toolbar over the plots; files are in figures/
    )
    caption_html = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{body}{caption_html}</figure>"


def page(title: str, body: str) -> str:
    """The whole document: stylesheet and plotly.js inline, then ``body``."""
    from plotly.offline import get_plotlyjs

    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{STYLE}</style>\n<script type=\"text/javascript\">{get_plotlyjs()}</script>\n"
        f"</head><body><main>\n{body}\n</main></body></html>\n"
    )
