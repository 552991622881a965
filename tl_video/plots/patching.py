"""Figures of activation patching: layer x frame heatmaps of normalised recovery (0 = corrupted, 1 = clean).

Every function takes a `PatchingResult` (never a model) and returns a `go.Figure` in the paper
style. The colour scale diverges at 0 (blue = towards clean, red = away from it) and is symmetric,
so a cell's colour reads the same in every heatmap; the number of examples, the number excluded
(clean-corrupted gap below the threshold) and the clean and corrupted metric values are stated.
"""

from __future__ import annotations

import math
import re

import numpy as np
import plotly.graph_objects as go

from tl_video.analyses.patching import PatchingResult
from tl_video.plots.style import COLUMN_WIDTH, paper_layout

DIVERGING = "RdBu"  # ColorBrewer, colour-blind safe; blue end = 1 (clean restored)
NOTE_FONT = dict(size=10, color="#555555")


def recovery_heatmap(result: PatchingResult, corruption: str | None = None, task: str | None = None) -> go.Figure:
    """Mean normalised recovery per (layer, frame) when one frame's clean activation is patched in."""
    corruption = corruption or result.corruptions[0]
    cells = result.recovery(corruption, task)
    counts = result.counts(corruption, task)
    layers = result.layers(corruption)
    fig = go.Figure()
    if not cells:
        fig.add_annotation(text=f"{corruption}: no example to patch ({counts['excluded']} excluded)", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
        return paper_layout(fig)
    means = np.array([[c.mean for c in row] for row in cells])
    n_frames = means.shape[1]
    limit = max(1.0, float(np.nanmax(np.abs(means))))
    frames = [f"{f + 1}" for f in range(n_frames)]
    rows = [f"L{layer + 1}" for layer in layers]
    custom = [[[c.low, c.high, c.n] for c in row] for row in cells]
    fig.add_trace(go.Heatmap(
        z=means, x=frames, y=rows, zmid=0, zmin=-limit, zmax=limit, colorscale=DIVERGING, customdata=custom,
        text=[[f"{round(v, 2) + 0.0:.2f}" for v in row] for row in means], texttemplate="%{text}", textfont=dict(size=10),
        colorbar=dict(title=dict(text="recovery", side="right"), thickness=12, len=0.9, tickvals=_ticks(limit)),
        hovertemplate="%{y}, frame %{x}: %{z:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}], n=%{customdata[2]}<extra></extra>",
        xgap=1, ygap=1,
    ))
    values = result.metric_values(corruption, task)
    activation = result.header.options["activation"]
    paper_layout(fig, width=COLUMN_WIDTH, height=max(300, 90 + 34 * len(rows)), legend_below=False)
    fig.update_xaxes(title_text="patched frame", type="category", showgrid=False, ticks="")
    fig.update_yaxes(title_text=f"layer ({activation})", type="category", showgrid=False, ticks="")
    fig.update_layout(margin=dict(t=62, r=20))
    where = "" if task is None else f"{task.replace('_', ' ')}; "
    fig.add_annotation(
        text=(f"{where}{corruption}: n = {counts['n']} examples, {counts['excluded']} excluded (|clean − corrupted| "
              f"< {counts['min_gap']:g})<br>logit diff. clean {values['clean'].mean:+.2f}, corrupted {values['corrupted'].mean:+.2f}; "
              f"0 = corrupted, 1 = clean"),
        xref="paper", yref="paper", x=0, y=1, yshift=8, xanchor="left", yanchor="bottom", showarrow=False,
        font=NOTE_FONT, align="left",
    )
    return fig


def _ticks(limit: float) -> list[float]:
    step = 0.5 if limit <= 1.0 else float(math.ceil(limit / 2))
    ticks = np.arange(-limit, limit + 1e-9, step)
    return [round(float(t), 2) for t in ticks]


def _stem(corruption: str) -> str:
    return "patching_" + re.sub(r"[^a-z0-9]+", "_", corruption.lower()).strip("_")


def figures(result: PatchingResult) -> dict[str, go.Figure]:
    """The figures the report shows: one recovery heatmap per corruption."""
    return {_stem(corruption): recovery_heatmap(result, corruption) for corruption in result.corruptions}
