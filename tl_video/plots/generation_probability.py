"""Figure of generation probability by layer: the true option's letter vs the false options', L1..Ln.

Each line is the mean over the analysed examples of the letter's probability read out after each
layer, with its bootstrap 95% interval as a band; the false options are averaged per example first.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_video.analyses.generation_probability import POOLED, GenerationProbabilityResult
from tl_video.analyses.statistics import MeanCI
from tl_video.plots.style import flow_style, layer_axis, paper_layout, translucent

READOUT_TITLES = {"final_norm": "logit lens with the final norm", "paper_compat": "paper-compatible readout"}


def band_traces(name: str, points: list[MeanCI], colour: str, dash: str) -> list[go.Scatter]:
    """A mean line over layers 0..n-1 with its interval drawn as a translucent band (one legend entry)."""
    layers = list(range(len(points)))
    hover = [f"L{layer + 1}: {p.mean:.3f} [{p.low:.3f}, {p.high:.3f}], n = {p.n}" for layer, p in zip(layers, points)]
    return [
        go.Scatter(x=layers, y=[p.high for p in points], mode="lines", line=dict(width=0), legendgroup=name,
                   showlegend=False, hoverinfo="skip"),
        go.Scatter(x=layers, y=[p.low for p in points], mode="lines", line=dict(width=0), fill="tonexty",
                   fillcolor=translucent(colour), legendgroup=name, showlegend=False, hoverinfo="skip"),
        go.Scatter(x=layers, y=[p.mean for p in points], mode="lines+markers", name=name, legendgroup=name,
                   line=dict(color=colour, dash=dash, width=2.5), marker=dict(size=6, color=colour),
                   text=hover, hovertemplate="%{text}<extra>" + name + "</extra>"),
    ]


def probability_by_layer(result: GenerationProbabilityResult, readout: str = "final_norm", task: str = POOLED) -> go.Figure:
    """Probability of the true option's letter and of the false options' (mean) after each layer, with 95% bands."""
    curves = result.curves(readout, task)
    fig = go.Figure()
    for name, points in curves.items():
        colour, dash = flow_style(name)
        fig.add_traces(band_traces("false options (mean)" if name == "false options" else name, points, colour, dash))
    n = curves["true option"][0].n
    paper_layout(fig, legend_below=False)
    layer_axis(fig, result.n_layers)
    where = "all tasks" if task == POOLED else task.replace("_", " ")
    fig.update_yaxes(title_text="answer-letter probability", range=[0, 1.02], tickformat=".1f")
    fig.update_layout(
        legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom", font=dict(size=11), bgcolor="rgba(255,255,255,0)"),
        margin=dict(t=58),
    )
    fig.add_annotation(
        text=f"{READOUT_TITLES.get(readout, readout)}; {where}; n = {n} examples", xref="paper", yref="paper",
        x=0, y=1.0, yshift=24, xanchor="left", yanchor="bottom", showarrow=False, font=dict(size=11, color="#555555"),
    )
    return fig


def probability_by_layer_by_task(result: GenerationProbabilityResult, readout: str = "final_norm") -> go.Figure:
    """Small multiples of `probability_by_layer`: one panel per task (shared axes), n stated per panel."""
    tasks = result.tasks()
    cols = min(3, max(1, len(tasks)))
    rows = -(-len(tasks) // cols)
    curves = {task: result.curves(readout, task) for task in tasks}
    titles = [f"{task.replace('_', ' ')} (n = {curves[task]['true option'][0].n})" for task in tasks]
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, subplot_titles=titles,
                        horizontal_spacing=0.04, vertical_spacing=0.16)
    for index, task in enumerate(tasks):
        row, col = index // cols + 1, index % cols + 1
        for name, points in curves[task].items():
            colour, dash = flow_style(name)
            for trace in band_traces("false options (mean)" if name == "false options" else name, points, colour, dash):
                trace.showlegend = index == 0 and trace.showlegend is not False
                fig.add_trace(trace, row=row, col=col)
        layer_axis(fig, result.n_layers, row=row, col=col, title="")
    paper_layout(fig, width=max(520, 300 * cols), height=110 + 230 * rows)
    fig.update_layout(legend=dict(y=-0.12 - 0.12 / rows), margin=dict(t=30, b=80))
    for annotation in fig.layout.annotations:
        annotation.font = dict(size=12)
    fig.update_yaxes(range=[0, 1.02], tickformat=".1f")
    fig.update_yaxes(title_text="answer-letter probability", col=1)
    fig.add_annotation(text=f"layer ({READOUT_TITLES.get(readout, readout)})", xref="paper", yref="paper", x=0.5,
                       y=-0.05 - 0.05 / rows, xanchor="center", yanchor="top", showarrow=False, font=dict(size=13))
    return fig


def figures(result: GenerationProbabilityResult) -> dict[str, go.Figure]:
    """The figures the report shows: pooled curves for each readout, and per-task panels of the final-norm
    readout when the run has more than one task."""
    out = {
        "generation_probability" if readout == "final_norm" else f"generation_probability_{readout}": probability_by_layer(result, readout)
        for readout in result.readouts
    }
    if len(result.tasks()) > 1 and result.readouts:
        readout = "final_norm" if "final_norm" in result.readouts else result.readouts[0]
        out["generation_probability_by_task"] = probability_by_layer_by_task(result, readout)
    return out
