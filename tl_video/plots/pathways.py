"""Figures of the effective-pathway analysis: the table of conditions and the edges-vs-accuracy plot.

Both read a `PathwayResult`: per condition (full attention, effective pathways, random blocking of
as many edges) the share of attention edges kept, summed over layers and examples, and the
accuracy with its denominator and bootstrap 95% interval.
"""

from __future__ import annotations

import plotly.graph_objects as go

from tl_video.analyses.pathways import POOLED, PathwayResult
from tl_video.plots.style import FONT, flow_style, paper_layout

DODGE = 0.025  # distance between markers drawn at the same edge share, as a fraction of the x axis
SYMBOLS = {"full attention": "circle", "effective pathways": "diamond", "random blocking": "square"}


def pathway_table(result: PathwayResult, task: str = POOLED) -> go.Figure:
    """Plotly table: condition, edges kept (% and per example), accuracy with its denominator and 95% interval;
    when not only correctly answered examples were analysed, also the accuracy retained from full attention."""
    rows = result.table(task)
    columns = {
        "condition": ([row["condition"] for row in rows], 1.45, "left"),
        "edges kept": ([f"{row['edges_kept_percent']:.1f}%" for row in rows], 0.9, "right"),
        "edges / example": ([f"{row['edges_kept_per_example']:,.0f}" for row in rows], 1.0, "right"),
        "accuracy": ([f"{100 * row['accuracy']:.1f}% ({row['n_correct']}/{row['n']})" for row in rows], 1.35, "right"),
        "95% CI": ([f"{100 * row['accuracy_low']:.0f}–{100 * row['accuracy_high']:.0f}%" for row in rows], 0.95, "right"),
    }
    if result.header.options.get("samples", "correct") != "correct":
        columns["retained"] = ([f"{100 * row['retained']:.0f}% ({row['n_retained']}/{row['n_full_correct']})"
                                for row in rows], 1.2, "right")
    font = dict(family=FONT["family"], size=12, color=FONT["color"])
    aligns = [align for _, _, align in columns.values()]
    fig = go.Figure(go.Table(
        columnwidth=[width for _, width, _ in columns.values()],
        header=dict(values=[f"<b>{name}</b>" for name in columns], fill_color="#f2f2f2", line_color="#cccccc",
                    align=aligns, font=font, height=28),
        cells=dict(values=[values for values, _, _ in columns.values()], line_color="#dddddd", fill_color="white",
                   align=aligns, font=font, height=26),
    ))
    paper_layout(fig, height=180, legend_below=False)
    fig.update_layout(margin=dict(l=5, r=5, t=5, b=42))
    fig.add_annotation(
        text=f"kept: {result.describe_ranges()}<br>{sample_note(result, rows[0]['n'])}", xref="paper", yref="paper", x=0, y=0,
        yshift=-4, xanchor="left", yanchor="top", align="left", showarrow=False, font=dict(size=10, color="#555555"),
    )
    return fig


def sample_note(result: PathwayResult, n: int) -> str:
    """Which examples the accuracies are over, e.g. "n = 10 answered correctly at baseline, of 12 examples"."""
    samples = result.header.options.get("samples", "correct")
    total = result.baseline()["n_examples"]
    if samples == "all":
        return f"n = {n} examples"
    return f"n = {n} answered {'correctly' if samples == 'correct' else 'wrongly'} at baseline, of {total} examples"


def edges_vs_accuracy(result: PathwayResult, task: str = POOLED) -> go.Figure:
    """x = % of attention edges kept, y = accuracy (%), one point per condition with its 95% interval.

    Pathways and random blocking keep the same edges by construction: their markers are set
    `DODGE` of the axis apart around that share (the hover text gives the exact share). The x axis
    starts at the tens below the smallest share (less 8 points), so close shares stay apart.
    """
    fig = go.Figure()
    rows = result.table(task)
    shown = [x for x in (row["edges_kept_percent"] for row in rows) if x == x]
    low, high = max(0.0, 10.0 * ((min(shown, default=0.0) - 8.0) // 10.0)), 102.5
    for row, x in zip(rows, dodged([row["edges_kept_percent"] for row in rows], DODGE * (high - low))):
        name = row["condition"]
        colour, _ = flow_style(name)
        accuracy = 100 * row["accuracy"]
        fig.add_trace(go.Scatter(
            x=[x], y=[accuracy], mode="markers", name=name, customdata=[row["edges_kept_percent"]],
            marker=dict(size=12, color=colour, symbol=SYMBOLS.get(name, "circle"), line=dict(width=1, color="white")),
            error_y=dict(type="data", symmetric=False, array=[100 * row["accuracy_high"] - accuracy],
                         arrayminus=[accuracy - 100 * row["accuracy_low"]], color=colour, thickness=1.5, width=5),
            hovertemplate=(f"{name}<br>edges kept %{{customdata:.1f}}%<br>accuracy %{{y:.1f}}% "
                           f"({row['n_correct']}/{row['n']})<extra></extra>"),
        ))
    paper_layout(fig, height=320)
    fig.add_annotation(text=sample_note(result, rows[0]["n"]), xref="paper", yref="paper", x=0.02, y=0.02,
                       xanchor="left", yanchor="bottom", showarrow=False, font=dict(size=10, color="#555555"))
    chance = result.chance_accuracy(task)
    if chance == chance:  # not NaN
        fig.add_hline(y=100 * chance, line=dict(color="#999999", width=1, dash="dot"), annotation_text="chance",
                      annotation_position="top right", annotation_font=dict(size=10, color="#777777"))
    fig.update_xaxes(title_text="attention edges kept (%)", range=[low, high], ticksuffix="%")
    fig.update_yaxes(title_text="accuracy (%)", range=[0, 105], ticksuffix="%")
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.25, x=0))
    return fig


def dodged(xs: list[float], step: float) -> list[float]:
    """x positions with points that share an x (pathways and random blocking, by construction) set side by side."""
    out = list(xs)
    for x in dict.fromkeys(xs):
        same = [i for i, value in enumerate(xs) if abs(value - x) < step]
        for rank, i in enumerate(same):
            out[i] = x + step * (rank - (len(same) - 1) / 2)
    return out


def figures(result: PathwayResult) -> dict[str, go.Figure]:
    """The figures the report shows: the pathway table and the edges-vs-accuracy plot (pooled)."""
    return {"pathways_table": pathway_table(result), "pathways_edges_accuracy": edges_vs_accuracy(result)}
