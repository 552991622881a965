"""Paper styling shared by every figure, and the one function that saves figures.

Colours are Okabe-Ito (colour-blind safe); each flow keeps one colour and one dash pattern in
every figure, so curves stay distinguishable in greyscale print. Layers are 0-indexed in data
and shown as "L1 … Ln" on axes. Figures are sized for one column of a two-column paper.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import plotly.graph_objects as go

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")

FLOW_STYLES: dict[str, tuple[str, str]] = {  # label -> (colour, dash), the same in every figure
    "No cross-frame interactions": ("#D55E00", "solid"),
    "Video↛Question": ("#0072B2", "solid"),
    "Video↛Last": ("#E69F00", "dash"),
    "Question↛Last": ("#009E73", "dot"),
    "Last↛Last": ("#000000", "dashdot"),
    "Non-option question↛Last": ("#56B4E9", "solid"),
    "True option↛Last": ("#CC79A7", "dash"),
    "False options↛Last": ("#000000", "dot"),
    "Video↛Non-option question": ("#0072B2", "solid"),
    "Non-option question↛True option": ("#CC79A7", "dash"),
    "Video↛True option": ("#E69F00", "dot"),
    # conditions of accuracy and pathway figures
    "full attention": ("#000000", "solid"),
    "effective pathways": ("#0072B2", "solid"),
    "random blocking": ("#D55E00", "dash"),
    "true option": ("#009E73", "solid"),
    "false options": ("#D55E00", "dash"),
}

COLUMN_WIDTH = 520  # px at scale 1: one column of a two-column paper at ~150 dpi
FONT = dict(family="Arial, Helvetica, sans-serif", size=13, color="#222222")
STATIC_FORMATS = ("png", "pdf", "svg")


def flow_style(label: str, index: int = 0) -> tuple[str, str]:
    """(colour, dash) of a flow label; labels the study does not know cycle through the palette."""
    if label in FLOW_STYLES:
        return FLOW_STYLES[label]
    return OKABE_ITO[index % len(OKABE_ITO)], DASHES[index % len(DASHES)]


def translucent(colour: str, alpha: float = 0.18) -> str:
    """A hex colour as rgba with ``alpha`` (for confidence bands)."""
    colour = colour.lstrip("#")
    red, green, blue = (int(colour[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha})"


def layer_label(layer: int) -> str:
    """0-indexed layer -> "L1" (prose and axes are 1-indexed)."""
    return f"L{layer + 1}"


def paper_layout(fig: go.Figure, *, width: int = COLUMN_WIDTH, height: int = 340, legend_below: bool = True) -> go.Figure:
    """Apply the shared paper look: white background, light grid, no title clutter."""
    fig.update_layout(
        template="simple_white", width=width, height=height, font=FONT,
        margin=dict(l=60, r=15, t=20 if not fig.layout.title.text else 45, b=55),
        legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, font=dict(size=11)) if legend_below else dict(font=dict(size=11)),
        hoverlabel=dict(font_size=11),
    )
    fig.update_xaxes(showgrid=True, gridcolor="#eeeeee", ticks="outside")
    fig.update_yaxes(showgrid=True, gridcolor="#eeeeee", ticks="outside")
    return fig


def layer_axis(fig: go.Figure, n_layers: int, *, row: int | None = None, col: int | None = None, title: str = "layer") -> None:
    """x axis over layers 0..n-1 labelled L1..Ln (every tick on small models, fewer on deep ones)."""
    step = 1 if n_layers <= 16 else 2 if n_layers <= 32 else 4
    ticks = list(range(0, n_layers, step))
    fig.update_xaxes(tickvals=ticks, ticktext=[layer_label(t) for t in ticks], title_text=title, row=row, col=col)


def static_export_available() -> str | None:
    """None when PNG/PDF/SVG export can run; otherwise the one-line reason and fix."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "static export needs kaleido: pip install kaleido"
    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "chrome")):
        return "static export needs Chrome or Chromium: apt-get install -y chromium (HTML figures were written)"
    return None


def save_figure(fig: go.Figure, path_stem: str | Path, formats: Iterable[str] = ("html", "png")) -> list[Path]:
    """Write ``fig`` as ``<stem>.html`` (always; plotly.js copied beside it, works offline) and each static format.

    Returns the written paths. A static format that cannot be exported here raises `RuntimeError`
    with the reason and the fix, after the HTML is written.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in ("html", *STATIC_FORMATS)]
    if unknown:
        raise ValueError(f"unknown figure formats {unknown}; valid: html, {', '.join(STATIC_FORMATS)}")
    html = stem.with_suffix(".html")
    fig.write_html(html, include_plotlyjs="directory", full_html=True)
    written = [html]
    static = [f for f in formats if f in STATIC_FORMATS]
    if static:
        problem = static_export_available()
        if problem:
            raise RuntimeError(problem)
        for fmt in static:
            path = stem.with_suffix(f".{fmt}")
            fig.write_image(path, scale=2 if fmt == "png" else 1)
            written.append(path)
    return written
