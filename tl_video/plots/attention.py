"""Figures of attention maps: question -> video attention per layer, baseline vs knockout, with frame boundaries.

Every function takes an `AttentionResult` (never a model) and returns a `go.Figure` in the paper
style. A map puts layers on rows (L1 at the top) and the video tokens on columns, frame after
frame (each frame's rows x cols grid laid out as a block), with lines at the frame boundaries;
baseline and knockout sit side by side on one colour scale. ``log_scale`` shows
log10(a + 5e-5), as the reference does, so small attention values stay visible.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_video.analyses.attention import CONDITIONS, AttentionResult
from tl_video.plots.style import COLUMN_WIDTH, flow_style, layer_axis, paper_layout, translucent

LOG_EPSILON = 5e-5
COLOURSCALE = "Viridis"  # perceptually uniform, colour-blind safe
BOUNDARY = dict(color="white", width=1.5)
NOTE_FONT = dict(size=10, color="#555555")
STOPWORDS = {"the", "which", "does", "what", "how", "many", "from", "question", "options", "and", "that", "this", "with"}
MAX_TOKENS = 6


def _grid_image(values: np.ndarray, video_grid: list[list[int]]) -> np.ndarray:
    """[layer, video_token] -> [layer * rows, frames * cols]: each layer a band, each frame a block (NaN where no token)."""
    cells = np.asarray(video_grid)
    n_frames, n_rows, n_cols = (int(cells[:, axis].max()) + 1 for axis in range(3))
    image = np.full((values.shape[0] * n_rows, n_frames * n_cols), np.nan)
    for index, (frame, row, col) in enumerate(cells):
        image[np.arange(values.shape[0]) * n_rows + row, frame * n_cols + col] = values[:, index]
    return image


def _scale(values: np.ndarray, log_scale: bool) -> np.ndarray:
    return np.log10(values + LOG_EPSILON) if log_scale else values


def _map_axes(fig: go.Figure, video_grid: list[list[int]], layers: list[int], row: int, col: int, frame_unit: str) -> list[dict]:
    """One tick per frame and per layer, L1 at the top; returns the frame-boundary lines for the caller to add at once.

    (`fig.add_shape` re-validates every shape already in the figure: one call per line is quadratic in the lines.)
    """
    cells = np.asarray(video_grid)
    n_frames, n_rows, n_cols = (int(cells[:, axis].max()) + 1 for axis in range(3))
    height = len(layers) * n_rows
    axes = fig.get_subplot(row, col)
    ref = {"xref": axes.xaxis.plotly_name.replace("axis", ""), "yref": axes.yaxis.plotly_name.replace("axis", "")}  # "x<n>", "y<n>"
    lines = [dict(type="line", x0=x, x1=x, y0=-0.5, y1=height - 0.5, line=BOUNDARY, **ref)
             for x in (frame * n_cols - 0.5 for frame in range(1, n_frames))]
    lines += [dict(type="line", x0=-0.5, x1=n_frames * n_cols - 0.5, y0=y, y1=y, line=dict(color="white", width=0.5), **ref)
              for y in (band * n_rows - 0.5 for band in (range(1, len(layers)) if n_rows > 1 else ()))]
    fig.update_xaxes(tickvals=[f * n_cols + (n_cols - 1) / 2 for f in range(n_frames)], ticktext=[str(f + 1) for f in range(n_frames)],
                     showgrid=False, ticks="", title_text=frame_unit, row=row, col=col)
    fig.update_yaxes(tickvals=[i * n_rows + (n_rows - 1) / 2 for i in range(len(layers))], ticktext=[f"L{layer + 1}" for layer in layers],
                     autorange="reversed", showgrid=False, ticks="", row=row, col=col)
    return lines


def _colourbar_title(log_scale: bool, heads: str) -> str:
    return f"log10(a+5e-5)<br>head {heads}" if log_scale else f"attention<br>head {heads}"


def attention_maps(result: AttentionResult, example_id: str | None = None, *, log_scale: bool = True) -> go.Figure:
    """The query group's attention to every video token per layer (mean over its tokens), baseline | knockout.

    Without ``example_id`` the maps are averaged over the analysed examples.
    """
    if example_id is None:
        maps = {c: result.mean_group_map(c) for c in CONDITIONS}
        grid = result.attention_records("baseline")[0]["video_grid"]
        what = f"mean over n = {len(result.attention_records('baseline'))} examples"
    else:
        records = {c: next(r for r in result.attention_records(c) if r["example_id"] == example_id) for c in CONDITIONS}
        maps = {c: np.asarray(records[c]["group_map"], dtype=float) for c in CONDITIONS}
        grid, what = records["baseline"]["video_grid"], example_id
    images = {c: _grid_image(maps[c], grid) for c in CONDITIONS}
    return _side_by_side(result, [images], grid, [""], log_scale,
                         f"{result.header.options['query']} → video, per layer ({what}); lines = frame boundaries")


def token_attention_maps(
    result: AttentionResult, example_id: str | None = None, tokens: list[int] | None = None, *, log_scale: bool = True
) -> go.Figure:
    """One map per query token (rows), baseline | knockout (columns): the reference's per-word view.

    ``tokens`` indexes the query group's tokens; by default the first few word tokens of the question.
    """
    records = result.token_records(example_id)
    base = records["baseline"]
    texts = base["query_tokens"]
    tokens = default_tokens(texts) if tokens is None else list(tokens)
    bad = [t for t in tokens if not 0 <= t < len(texts)]
    if bad:
        raise ValueError(f"query token indices {bad} are out of range: the query has {len(texts)} tokens (0..{len(texts) - 1})")
    grid = base["video_grid"]
    rows = []
    for token in tokens:
        rows.append({c: _grid_image(np.asarray(records[c]["token_maps"], dtype=float)[:, token], grid) for c in CONDITIONS})
    names = [repr(texts[t].strip() or texts[t]) for t in tokens]
    return _side_by_side(result, rows, grid, names, log_scale,
                         f"{base['example_id']}: attention of single {base['query']} tokens → video; lines = frame boundaries")


def default_tokens(texts: list[str]) -> list[int]:
    """Indices of the first word tokens of a query that carry content (alphabetic, not a stop word)."""
    chosen = [i for i, text in enumerate(texts) if text.strip().isalpha() and len(text.strip()) > 2 and text.strip().lower() not in STOPWORDS]
    return chosen[:MAX_TOKENS] or list(range(min(MAX_TOKENS, len(texts))))


def _side_by_side(result: AttentionResult, rows: list[dict], grid: list[list[int]], names: list[str], log_scale: bool, note: str) -> go.Figure:
    """Baseline | knockout on one (optionally log) colour scale, then knockout - baseline on a diverging scale centred at 0."""
    layers = result.layers
    label = result.knockout_label
    fig = make_subplots(rows=len(rows), cols=3, horizontal_spacing=0.09, vertical_spacing=0.06 if len(rows) > 1 else 0.0,
                        column_titles=["baseline", f"knockout: {label}", "knockout − baseline"],
                        row_titles=names if any(names) else None, shared_yaxes=True)
    scaled = [{c: _scale(row[c], log_scale) for c in CONDITIONS} for row in rows]
    values = np.concatenate([image[np.isfinite(image)] for row in scaled for image in row.values()])
    zmin, zmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    differences = [row["knockout"] - row["baseline"] for row in rows]
    finite = np.concatenate([d[np.isfinite(d)] for d in differences])
    limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1e-3
    heads = result.header.options["heads"]
    frame_unit = result.attention_records("baseline")[0]["frame_unit"]
    lines: list[dict] = []
    for r, (row, difference) in enumerate(zip(scaled, differences), start=1):
        for c, condition in enumerate(CONDITIONS, start=1):
            fig.add_trace(go.Heatmap(
                z=row[condition], zmin=zmin, zmax=zmax, colorscale=COLOURSCALE, showscale=(r == 1 and c == 1),
                colorbar=dict(title=dict(text=_colourbar_title(log_scale, heads), side="top", font=dict(size=10)), thickness=10, len=0.7,
                              tickfont=dict(size=10),
                              x=0.655, xanchor="left", y=1, yanchor="top"),
                hovertemplate="%{z:.3f}<extra>" + condition + "</extra>",
            ), row=r, col=c)
        fig.add_trace(go.Heatmap(
            z=difference, zmid=0, zmin=-limit, zmax=limit, colorscale="RdBu_r", showscale=(r == 1),
            colorbar=dict(title=dict(text="Δ attention", side="top", font=dict(size=10)), thickness=10, len=0.7, tickfont=dict(size=10),
                          x=1.0, xanchor="left", y=1, yanchor="top"),
            hovertemplate="%{z:.4f}<extra>knockout − baseline</extra>",
        ), row=r, col=3)
        for c in (1, 2, 3):
            lines += _map_axes(fig, grid, layers, r, c, frame_unit if r == len(rows) else "")
    fig.update_layout(shapes=lines)
    n_rows = 1 + max(cell[1] for cell in grid)
    band = min(720, max(200, 24 * len(layers) * n_rows))  # px per row of maps; deep models with big grids are capped
    paper_layout(fig, width=2 * COLUMN_WIDTH, height=110 + band * len(rows), legend_below=False)
    fig.update_xaxes(showgrid=False, ticks="")
    fig.update_yaxes(showgrid=False, ticks="")
    fig.update_layout(margin=dict(l=50, r=90, t=70, b=45))
    fig.for_each_annotation(lambda a: a.update(font=dict(size=11)))
    fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=1, yshift=30, xanchor="left", yanchor="bottom",
                       showarrow=False, font=NOTE_FONT, align="left")
    return fig


def video_mass_by_layer(result: AttentionResult) -> go.Figure:
    """Share of the query's attention on the video per layer: baseline and under the knockout, 95% bands."""
    fig = go.Figure()
    layers = result.layers
    for condition, name in (("baseline", "full attention"), ("knockout", result.knockout_label)):
        colour, dash = flow_style("full attention" if condition == "baseline" else "No cross-frame interactions")
        if condition == "knockout" and not result.knockout_label.startswith("No cross-frame"):
            colour, dash = flow_style(name, 1)
        points = result.video_mass(condition)
        fig.add_traces([
            go.Scatter(x=layers, y=[p.high for p in points], mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip", legendgroup=name),
            go.Scatter(x=layers, y=[p.low for p in points], mode="lines", line=dict(width=0), fill="tonexty",
                       fillcolor=translucent(colour), showlegend=False, hoverinfo="skip", legendgroup=name),
            go.Scatter(x=layers, y=[p.mean for p in points], mode="lines+markers", name=name, legendgroup=name,
                       line=dict(color=colour, dash=dash, width=2.5), marker=dict(size=6, color=colour),
                       customdata=[[p.low, p.high, p.n] for p in points],
                       hovertemplate="L%{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}], n=%{customdata[2]}<extra>" + name + "</extra>"),
        ])
    blocked = result.header.options.get("knockout_layers")
    if blocked:
        fig.add_vrect(x0=min(blocked) - 0.5, x1=max(blocked) + 0.5, fillcolor="#888888", opacity=0.12, line_width=0,
                      annotation_text="knockout layers", annotation_position="top left", annotation_font=dict(size=10, color="#555555"))
    paper_layout(fig, legend_below=True)
    layer_axis(fig, max(layers) + 1 if layers else 1)
    fig.update_xaxes(tickvals=layers, ticktext=[f"L{layer + 1}" for layer in layers])
    fig.update_yaxes(title_text=f"{result.header.options['query']} attention on video", tickformat=".0%", rangemode="tozero")
    n = len(result.attention_records("baseline"))
    fig.update_layout(margin=dict(t=34, b=85), height=360)
    fig.add_annotation(text=f"share of attention (head mean, mean over query tokens); n = {n} examples",
                       xref="paper", yref="paper", x=0, y=1, yshift=6, xanchor="left", yanchor="bottom", showarrow=False, font=NOTE_FONT)
    return fig


def figures(result: AttentionResult) -> dict[str, go.Figure]:
    """The figures the report shows: mean maps, per-token maps of one example, video mass by layer."""
    if not result.attention_records("baseline"):
        return {}
    out = {"attention_maps": attention_maps(result), "attention_video_mass": video_mass_by_layer(result)}
    if any(r["token_maps"] is not None for r in result.attention_records("baseline")):
        out["attention_token_maps"] = token_attention_maps(result)
    return out
