"""Figure of generation probability by layer: the true option's letter vs the false options', L1..Ln.

Each line is the mean over the analysed examples of the letter's probability read out after each
layer, with its bootstrap 95% interval as a band; the false options are averaged per example first.
"""

from __future__ import annotations

import plotly.graph_objects as go

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


def figures(result: GenerationProbabilityResult) -> dict[str, go.Figure]:
    """The figures the report shows: pooled curves for each readout of the run."""
    return {
        "generation_probability" if readout == "final_norm" else f"generation_probability_{readout}": probability_by_layer(result, readout)
        for readout in result.readouts
    }
