"""Figures of the logit lens on video tokens: keyword vocabulary by layer bin, the per-frame token grid, answer probability.

Every function takes a `LensResult` (never a model) and returns a `go.Figure` in the paper style.
"""

from __future__ import annotations

import base64
import io
from collections import Counter

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_video.analyses.lens import KEYWORD_KINDS, LensResult, token_key
from tl_video.plots.style import COLUMN_WIDTH, OKABE_ITO, layer_axis, paper_layout, translucent

KIND_COLOURS = {"spatial": "#0072B2", "temporal": "#D55E00", "other": "#222222"}
MAX_KEYWORD_TRACES = 8  # one Okabe-Ito colour each; the rarer keywords are pooled as "other keywords"
MAX_TEXT_TOKENS_PER_FRAME = 16  # larger per-frame grids show keyword squares instead of text
NOTE_FONT = dict(size=10, color="#555555")


def _note(fig: go.Figure, text: str, y: float = 1.0, yshift: int = 6) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0, y=y, yshift=yshift, xanchor="left", yanchor="bottom",
                       showarrow=False, font=NOTE_FONT, align="left")


def _readout_words(result: LensResult) -> str:
    return "paper-compatible readout (layer inputs @ W_E)" if result.options.paper_compat else "logit lens (final norm, W_U)"


def vocabulary_bars(result: LensResult, kind: str = "spatial") -> go.Figure:
    """Stacked bars per layer bin: each keyword's share of the keyword top-1 readouts (rows sum to 1).

    Above each bar: the fraction of all video-token readouts in the bin that are keywords at all,
    so a bar built from a handful of hits is not mistaken for a dominant vocabulary.
    """
    table = result.vocabulary(kind)
    totals = [sum(column) for column in zip(*table.counts)] if table.counts else []
    ranked = [table.keywords[i] for i in sorted(range(len(totals)), key=lambda i: -totals[i]) if totals[i] > 0]
    shown, pooled = ranked, []
    if len(ranked) > MAX_KEYWORD_TRACES:
        shown, pooled = ranked[: MAX_KEYWORD_TRACES - 1], ranked[MAX_KEYWORD_TRACES - 1 :]
    fig = go.Figure()
    index = {word: i for i, word in enumerate(table.keywords)}
    for i, word in enumerate(shown):
        fig.add_trace(go.Bar(
            x=table.bins, y=[row[index[word]] for row in table.shares], name=word,
            marker=dict(color=OKABE_ITO[i % len(OKABE_ITO)], line=dict(color="white", width=0.5)),
            customdata=[row[index[word]] for row in table.counts],
            hovertemplate=f"{word}<br>%{{x}}: %{{y:.0%}} (%{{customdata}} readouts)<extra></extra>",
        ))
    if pooled:
        fig.add_trace(go.Bar(
            x=table.bins, y=[sum(row[index[w]] for w in pooled) for row in table.shares], name="other keywords",
            marker=dict(color="#BBBBBB", line=dict(color="white", width=0.5)),
            hovertemplate="other keywords<br>%{x}: %{y:.0%}<extra></extra>",
        ))
    if not shown:  # keep the bins on the axis and say why it is empty
        fig.add_trace(go.Bar(x=table.bins, y=[0] * len(table.bins), showlegend=False, hoverinfo="skip"))
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=12, color="#555555"),
                           text=f"no top-1 readout of any video token<br>is a {kind} keyword in any layer bin")
    for label, fraction in zip(table.bins, table.keyword_fraction) if shown else ():
        fig.add_annotation(x=label, y=1.0 if fraction else 0.0, text=f"{fraction:.0%}", showarrow=False, yshift=9, font=dict(size=10))
    paper_layout(fig, legend_below=False)
    n_examples = len(result.lens_records())
    fig.update_layout(
        barmode="stack", bargap=0.25, margin=dict(t=62, r=130),
        legend=dict(orientation="v", x=1.02, y=1, xanchor="left", yanchor="top", font=dict(size=11), title=dict(text=f"{kind} keyword")),
    )
    fig.update_yaxes(title_text="share of keyword readouts", range=[0, 1.12], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1])
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=table.bins)
    fig.update_xaxes(title_text="layer bin" + (" (rows = layer inputs; last = final output)" if result.options.paper_compat else ""),
                     showgrid=False)
    _note(fig, f"top-1 readout of every video token; {_readout_words(result)}<br>"
               f"n = {n_examples} examples; above bars: keyword share of all readouts", y=1.06)
    return fig


def _label(counter: Counter) -> str:
    """The most frequent top-1 token of a cell over a bin's layers (earliest first on ties)."""
    return counter.most_common(1)[0][0] if counter else ""


def _image_size(png: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(png))) as image:
        return image.size  # (width, height)


def token_grid(result: LensResult, example_id: str | None = None) -> go.Figure:
    """Rows = layer bins, columns = frames: each frame (dimmed) with the top-1 token of each of its video tokens.

    A bin's label for a token is the token most often top-1 across the bin's layers. Small grids
    (up to 16 tokens per frame, e.g. pooled models) write every token, keywords coloured by kind
    (spatial blue, temporal vermillion, others black). Larger grids (e.g. 12 x 12 tokens per frame)
    would be unreadable as text: there each keyword cell is a coloured square, one colour per
    keyword (legend), and other tokens are left blank; hovering shows every token.
    """
    grid = result.grid(example_id)
    bins, labels = result.bins, result.bin_labels
    cells = [tuple(cell) for cell in grid["video_grid"]]
    n_frames = 1 + max(f for f, _, _ in cells)
    n_rows, n_cols = 1 + max(r for _, r, _ in cells), 1 + max(c for _, _, c in cells)
    keywords = {kind: set(result.options.keywords(kind)) for kind in KEYWORD_KINDS}
    as_text = n_rows * n_cols <= MAX_TEXT_TOKENS_PER_FRAME
    fig = make_subplots(rows=len(bins), cols=n_frames, horizontal_spacing=0.008, vertical_spacing=0.012,
                        column_titles=[f"{grid['frame_unit']} {f + 1}" for f in range(n_frames)], row_titles=labels)
    width, height = _image_size(grid["frames_png"][0])
    cell = (80 if n_frames <= 8 else 56) if as_text else (140 if n_frames <= 8 else 100)  # px per frame at scale 1
    token_px = cell / max(n_cols, n_rows)
    labelled = [[_label(Counter(grid["top_tokens"][layer][index][0] for layer in range(start, stop))) for index in range(len(cells))]
                for start, stop in bins]
    kind_of = lambda text: next((k for k in KEYWORD_KINDS if token_key(text) in keywords[k]), "other")  # noqa: E731
    ranked = [w for w, _ in Counter(token_key(t) for row in labelled for t in row if kind_of(t) != "other").most_common()]
    colour_of = {word: OKABE_ITO[i] if i < MAX_KEYWORD_TRACES - 1 else "#BBBBBB" for i, word in enumerate(ranked)}
    shown_in_legend: set[str] = set()
    for b, (start, stop) in enumerate(bins):
        for frame in range(n_frames):
            row, col = b + 1, frame + 1
            fig.add_trace(go.Image(source="data:image/png;base64," + grid["frames_png"][frame], opacity=0.45, hoverinfo="skip"),
                          row=row, col=col)
            points: dict[str, list] = {}
            for index, (f, r, c) in enumerate(cells):
                if f != frame:
                    continue
                text = labelled[b][index]
                top5 = ", ".join(f"{t.strip()} {p:.2f}" for t, p in zip(grid["top_tokens"][start][index], grid["top_probabilities"][start][index]))
                group = ("all" if as_text else token_key(text) if kind_of(text) != "other" else "")
                points.setdefault(group, []).append((
                    (c + 0.5) * width / n_cols, (r + 0.5) * height / n_rows, text.strip() or repr(text), kind_of(text),
                    f"{labels[b]}, {grid['frame_unit']} {frame + 1}, token ({r}, {c}): {text.strip()!r}<br>top-5 at L{start + 1}: {top5}",
                ))
            for group, items in points.items():
                xs, ys, texts, kinds, hovers = (list(v) for v in zip(*items))
                if as_text:
                    sizes = [max(6, min(13, int(token_px / (0.62 * max(1, len(t)))))) for t in texts]
                    trace = go.Scatter(x=xs, y=ys, text=texts, mode="text", hovertext=hovers, hoverinfo="text", showlegend=False,
                                       textfont=dict(size=sizes, color=[KIND_COLOURS[k] for k in kinds], family="Arial Black, Arial"))
                elif group:
                    trace = go.Scatter(x=xs, y=ys, mode="markers", name=group, legendgroup=group, hovertext=hovers, hoverinfo="text",
                                       marker=dict(symbol="square", size=max(3, token_px * 0.8), color=colour_of[group]),
                                       showlegend=group not in shown_in_legend and colour_of[group] != "#BBBBBB")
                    shown_in_legend.add(group)
                else:  # non-keywords: invisible, hover only
                    trace = go.Scatter(x=xs, y=ys, mode="markers", marker=dict(size=max(3, token_px * 0.8), opacity=0),
                                       hovertext=hovers, hoverinfo="text", showlegend=False)
                fig.add_trace(trace, row=row, col=col)
    paper_layout(fig, width=max(COLUMN_WIDTH, 50 + cell * n_frames + (0 if as_text else 110)), height=80 + cell * len(bins), legend_below=False)
    fig.update_xaxes(showticklabels=False, showgrid=False, ticks="", showline=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, ticks="", showline=False, zeroline=False)
    fig.update_layout(margin=dict(l=10, r=40 if as_text else 150, t=70, b=10),
                      legend=dict(orientation="v", x=1.03, y=1, xanchor="left", yanchor="top", title=dict(text="keyword")))
    fig.for_each_annotation(lambda a: a.update(font=dict(size=11)) if a.text in labels or a.text.startswith(grid["frame_unit"]) else None)
    key = ("blue = spatial keyword, vermillion = temporal keyword, black = other token" if as_text
           else "coloured squares = tokens whose top-1 readout is a keyword (legend); blank = other tokens (hover for all)")
    _note(fig, f"{grid['example_id']}: top-1 token of each video token per layer bin; {_readout_words(result)}<br>{key}", yshift=26)
    return fig


def answer_probability(result: LensResult, task: str | None = None) -> go.Figure:
    """The true option letter's probability at the last position after each layer: mean with 95% band."""
    points = result.answer_probability(task)
    layers = list(range(len(points)))
    colour = "#009E73"
    fig = go.Figure([
        go.Scatter(x=layers, y=[p.high for p in points], mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip"),
        go.Scatter(x=layers, y=[p.low for p in points], mode="lines", line=dict(width=0), fill="tonexty",
                   fillcolor=translucent(colour), showlegend=False, hoverinfo="skip"),
        go.Scatter(x=layers, y=[p.mean for p in points], mode="lines+markers", name="true option",
                   line=dict(color=colour, width=2.5), marker=dict(size=6, color=colour),
                   customdata=[[p.low, p.high, p.n] for p in points],
                   hovertemplate="L%{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}], n=%{customdata[2]}<extra></extra>"),
    ])
    paper_layout(fig, legend_below=False)
    layer_axis(fig, len(points))
    fig.update_xaxes(ticktext=[f"L{layer + 1}" for layer in layers], tickvals=layers)
    fig.update_yaxes(title_text="p(true option letter)", range=[0, 1.02], tickformat=".1f")
    fig.update_layout(showlegend=False, margin=dict(t=34))
    where = "all tasks" if task is None else task.replace("_", " ")
    _note(fig, f"last position, softmax(W_U · ln_final(resid_post)); {where}; n = {points[0].n if points else 0} examples")
    return fig


def figures(result: LensResult) -> dict[str, go.Figure]:
    """The figures the report shows: vocabulary bars per keyword kind, the token grid, answer probability."""
    out = {f"lens_vocabulary_{kind}": vocabulary_bars(result, kind) for kind in KEYWORD_KINDS}
    if any(r.get("kind") == "grid" for r in result.records):
        out["lens_token_grid"] = token_grid(result)
    if result.lens_records():
        out["lens_answer_probability"] = answer_probability(result)
    return out
