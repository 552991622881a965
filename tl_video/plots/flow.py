"""Figures of the information-flow study: % change curves with 95% bands, and accuracy under knockout.

Every function takes a `FlowResult` (never a model) and returns a `go.Figure` in the paper style:
x = the window's centre layer (L1..Ln), one line per blocked flow in its fixed colour and dash
(`FLOW_STYLES`), a zero (or baseline) reference line, and the number of examples in a corner.
"""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_video.analyses.flow import FlowResult
from tl_video.plots.style import flow_style, layer_axis, paper_layout, translucent

X_TITLES = {
    "center": "centre layer of the blocked window (k = {k})",
    "inverse": "centre of the unblocked window (k = {k}); all other layers blocked",
    "top_down": "first blocked layer (blocked to the last layer)",
    "bottom_up": "last blocked layer (blocked from L1)",
}
Y_TITLES = {"true": "Δ p(true option), % of baseline", "answer": "Δ p(baseline answer), % of baseline",
            "anchor": "Δ p(anchor token), % of baseline"}
SAMPLE_WORDS = {"correct": "answered correctly", "wrong": "answered wrongly", "all": "all"}
REFERENCE_LINE = dict(color="#888888", width=1)
MARKERS = ("circle", "square", "diamond", "triangle-up", "x", "cross")  # by position within a preset


def _marker(index: int, colour: str) -> dict:
    """Distinct marker shapes keep overlapping curves (e.g. several flows at 0) apart in print."""
    return dict(symbol=MARKERS[index % len(MARKERS)], size=6, color=colour)


def _x_title(result: FlowResult, window: str) -> str:
    return X_TITLES[window].format(k=result.window_k)


def _sample_words(result: FlowResult) -> str:
    return SAMPLE_WORDS.get(str(result.header.options.get("samples", "correct")), "")


def _corner(fig: go.Figure, text: str) -> None:
    """A small note just above the plot's top-right corner (outside the data, so it hides no curve)."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=1, y=1.01, xanchor="right", yanchor="bottom",
                       showarrow=False, font=dict(size=10, color="#555555"))
    fig.update_layout(margin=dict(t=30))


def _legend_below(fig: go.Figure) -> None:
    """Legend under the x-axis title with room between them."""
    fig.update_layout(height=380, legend=dict(y=-0.27), margin=dict(b=95), showlegend=True)  # even for one flow


def _add_curves(fig: go.Figure, result: FlowResult, preset: str, window: str, metric: str, task: str | None,
                *, row: int | None = None, col: int | None = None, showlegend: bool = True) -> int:
    """Mean line + 95% band per flow of ``preset``; returns the largest n behind any curve."""
    where = {} if row is None else dict(row=row, col=col)
    n = 0
    for index, (label, curve) in enumerate(result.curves(preset, window=window, metric=metric, task=task).items()):
        colour, dash = flow_style(label, index)
        x = list(curve.layers)
        lows, highs = [s.low for s in curve.stats], [s.high for s in curve.stats]
        fig.add_trace(go.Scatter(x=x, y=highs, mode="lines", line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=label), **where)
        fig.add_trace(go.Scatter(x=x, y=lows, mode="lines", line=dict(width=0), fill="tonexty",
                                 fillcolor=translucent(colour, 0.13), hoverinfo="skip", showlegend=False, legendgroup=label), **where)
        fig.add_trace(go.Scatter(
            x=x, y=[s.mean for s in curve.stats], mode="lines+markers", name=label, legendgroup=label,
            showlegend=showlegend, line=dict(color=colour, dash=dash, width=2), marker=_marker(index, colour),
            customdata=[[s.low, s.high, s.n] for s in curve.stats],
            hovertemplate=f"{label}<br>L%{{x}}: %{{y:.1f}}% [%{{customdata[0]:.1f}}, %{{customdata[1]:.1f}}], n=%{{customdata[2]}}<extra></extra>",
        ), **where)
        n = max(n, curve.n)
    return n


def flow_curves(result: FlowResult, preset: str, *, window: str = "center", metric: str | None = None,
                task: str | None = None) -> go.Figure:
    """% change of the true option's (or baseline answer's) probability when each flow of ``preset`` is
    blocked, by centre layer: mean over examples with its 95% bootstrap band."""
    fig = go.Figure()
    n = _add_curves(fig, result, preset, window, metric, task)
    fig.add_hline(y=0, line=REFERENCE_LINE)
    paper_layout(fig)
    layer_axis(fig, result.n_layers, title=_x_title(result, window))
    fig.update_yaxes(title_text=Y_TITLES[metric or result.DEFAULT_METRIC], zeroline=False)
    _legend_below(fig)
    scope = f"{task}, " if task else ""
    _corner(fig, f"{scope}n = {n} ({_sample_words(result)}); mean, 95% CI")
    return fig


def flow_curves_by_task(result: FlowResult, preset: str, *, window: str = "center", metric: str | None = None) -> go.Figure:
    """Small multiples of `flow_curves`: one panel per task (shared axes), n stated per panel."""
    tasks = result.tasks()
    cols = min(3, max(1, len(tasks)))
    rows = -(-len(tasks) // cols)
    titles = [f"{task} (n = {result.curve(result.labels(preset)[0], window=window, metric=metric, task=task, preset=preset).n})"
              for task in tasks]
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, subplot_titles=titles,
                        horizontal_spacing=0.04, vertical_spacing=0.16)
    for index, task in enumerate(tasks):
        row, col = index // cols + 1, index % cols + 1
        _add_curves(fig, result, preset, window, metric, task, row=row, col=col, showlegend=index == 0)
        fig.add_hline(y=0, line=REFERENCE_LINE, row=row, col=col)
        layer_axis(fig, result.n_layers, row=row, col=col, title="")
    paper_layout(fig, width=max(520, 300 * cols), height=110 + 230 * rows)
    fig.update_layout(legend=dict(y=-0.12 - 0.12 / rows), margin=dict(t=30, b=80))
    for annotation in fig.layout.annotations:
        annotation.font = dict(size=12)
    fig.update_yaxes(title_text=Y_TITLES[metric or result.DEFAULT_METRIC], col=1)
    fig.add_annotation(text=_x_title(result, window), xref="paper", yref="paper", x=0.5, y=-0.05 - 0.05 / rows,
                       xanchor="center", yanchor="top", showarrow=False, font=dict(size=13))
    return fig


def accuracy_under_knockout(result: FlowResult, preset: str, *, window: str = "center", task: str | None = None) -> go.Figure:
    """Accuracy (new argmax = true letter) when each flow is blocked, by centre layer, against the baseline
    accuracy of the same examples; the denominator is stated."""
    fig = go.Figure()
    n_selected, baseline = 0, None
    for index, label in enumerate(result.labels(preset)):
        accuracy = result.accuracy(label, window=window, task=task, preset=preset)
        colour, dash = flow_style(label, index)
        fig.add_trace(go.Scatter(
            x=list(accuracy.layers), y=[100 * a for a in accuracy.accuracy], mode="lines+markers", name=label,
            line=dict(color=colour, dash=dash, width=2), marker=_marker(index, colour),
            customdata=[[c, n] for c, n in zip(accuracy.n_correct, accuracy.n)],
            hovertemplate=f"{label}<br>L%{{x}}: %{{y:.0f}}% (%{{customdata[0]}} of %{{customdata[1]}})<extra></extra>",
        ))
        n_selected, baseline = accuracy.n_selected, accuracy
    if baseline is not None and n_selected:
        fig.add_hline(y=100 * baseline.baseline_accuracy, line=dict(color="#888888", width=1.5, dash="dash"),
                      annotation_text=f"no knockout: {baseline.baseline_correct} of {n_selected}",
                      annotation_position="bottom left", annotation_font=dict(size=10, color="#555555"))
    paper_layout(fig)
    layer_axis(fig, result.n_layers, title=_x_title(result, window))
    fig.update_yaxes(title_text=f"{result.ACCURACY_NAME} (%)", range=[-3, 105])
    _legend_below(fig)
    scope = f"{task}, " if task else ""
    _corner(fig, f"{scope}n = {n_selected} ({_sample_words(result)}) per layer")
    return fig


def figures(result: FlowResult, *, windows: Sequence[str] | None = None, by_task: bool = True) -> dict[str, go.Figure]:
    """The figures a report shows: per preset x window style (``windows``, default every swept one), the flow
    curves and accuracy under knockout; per preset, the per-task small multiples of the centre window
    (``by_task``, when there is more than one task)."""
    out = {}
    chosen = result.windows() if windows is None else [w for w in result.windows() if w in windows]
    for preset in result.presets():
        for window in chosen:
            if not result.evaluated_for(preset, window):
                continue
            out[f"flow_{preset}_{window}"] = flow_curves(result, preset, window=window)
            out[f"accuracy_{preset}_{window}"] = accuracy_under_knockout(result, preset, window=window)
        if by_task and len(result.tasks()) > 1 and "center" in chosen and result.evaluated_for(preset, "center"):
            out[f"flow_{preset}_center_by_task"] = flow_curves_by_task(result, preset)
    return out


__all__ = ["accuracy_under_knockout", "figures", "flow_curves", "flow_curves_by_task"]
