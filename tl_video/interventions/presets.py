"""The information-flow paper's knockout targets as data (docs/methods.md, "Sweep targets").

A preset is a function of the layout (cross-frame depends on the number of frames) and the
blocked layers that returns one `KnockoutSpec` per curve of the paper's figure: vql-to-ql gives
four specs (Video↛Question, Video↛Last, Question↛Last, Last↛Last), each swept on its own.
Users build their own specs the same way.

`effective_pathway_spec` and `random_blocking_spec` build the effective-pathways experiment
(docs/methods.md, "Effective pathways") and its seeded random baseline with the same number of
blocked edges per layer (`random_baseline_for`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from tl_video.interventions.knockout import EdgeBlock, KnockoutSpec, RandomEdges, edge_counts
from tl_video.interventions.windows import checked_layers, integer
from tl_video.prompts.layout import TokenLayout

GROUP_NAMES = {
    "video": "Video", "question": "Question", "last": "Last", "question_without_options": "Non-option question",
    "true_option": "True option", "false_options": "False options",
}


def _one_spec_per_edge(edges: list[tuple[str, str]], layers: Iterable[int]) -> list[KnockoutSpec]:
    layers = tuple(layers)
    return [
        KnockoutSpec(blocks=(EdgeBlock(source=s, target=t, layers=layers),), label=f"{GROUP_NAMES[s]}↛{GROUP_NAMES[t]}")
        for s, t in edges
    ]


def _cross_frame_blocks(layout: TokenLayout, layers: Iterable[int]) -> tuple[EdgeBlock, ...]:
    layers = tuple(layers)
    return tuple(
        EdgeBlock(source=f"frame[0:{frame}]", target=f"frame[{frame}]", layers=layers)
        for frame in range(1, layout.n_frames)
    )


def cross_frame(layout: TokenLayout, layers: Iterable[int]) -> list[KnockoutSpec]:
    """No cross-frame interactions: queries in frame i cannot see keys in frames < i."""
    return [KnockoutSpec(blocks=_cross_frame_blocks(layout, layers), label="No cross-frame interactions")]


def vql_to_ql(layout: TokenLayout, layers: Iterable[int]) -> list[KnockoutSpec]:
    """Video↛Question, Video↛Last, Question↛Last, Last↛Last."""
    return _one_spec_per_edge([("video", "question"), ("video", "last"), ("question", "last"), ("last", "last")], layers)


def question_and_options_to_last(layout: TokenLayout, layers: Iterable[int]) -> list[KnockoutSpec]:
    """Non-option question↛Last, True option↛Last, False options↛Last."""
    return _one_spec_per_edge(
        [("question_without_options", "last"), ("true_option", "last"), ("false_options", "last")], layers
    )


def vq_to_true_option(layout: TokenLayout, layers: Iterable[int]) -> list[KnockoutSpec]:
    """Video↛Non-option question, Non-option question↛True option, Video↛True option."""
    return _one_spec_per_edge(
        [("video", "question_without_options"), ("question_without_options", "true_option"), ("video", "true_option")],
        layers,
    )


PRESETS: dict[str, Callable[[TokenLayout, Iterable[int]], list[KnockoutSpec]]] = {
    "cross-frame": cross_frame,
    "vql-to-ql": vql_to_ql,
    "question-and-options-to-last": question_and_options_to_last,
    "vq-to-true-opt": vq_to_true_option,
}


def preset(name: str, layout: TokenLayout, layers: Iterable[int]) -> list[KnockoutSpec]:
    """The specs of a named preset, one per curve."""
    if name not in PRESETS:
        raise ValueError(f"unknown knockout preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name](layout, layers)


def effective_pathway_spec(
    layout: TokenLayout,
    n_layers: int,
    cross_frame: Iterable[int],
    video_to_question: Iterable[int],
    question_to_last: Iterable[int],
    video_to_last: Iterable[int] = (),
    last_to_last: Iterable[int] = (),
    label: str = "Effective pathways",
) -> KnockoutSpec:
    """Keep each flow only in its range of 0-indexed layers and block the edges around the pathways.

    Cross-frame edges are kept only in `cross_frame`, Video→Question only in `video_to_question`,
    Question→Last only in `question_to_last`, Video→Last only in `video_to_last` and Last→Last
    only in `last_to_last` (both empty by default: blocked in every layer, the paper's setting).
    After `video_to_question` ends every video↔video edge is blocked (diagonal included), after
    `question_to_last` ends every question↔question edge. Nothing else is blocked, so ranges that
    cover every layer give the empty spec.
    """
    kept = {
        name: set(checked_layers(layers, n_layers, f"effective pathways: {name}"))
        for name, layers in (("cross_frame", cross_frame), ("video_to_question", video_to_question),
                             ("question_to_last", question_to_last), ("video_to_last", video_to_last),
                             ("last_to_last", last_to_last))
    }
    for name in ("video_to_question", "question_to_last"):
        if not kept[name]:
            raise ValueError(f"effective pathways: {name} must name at least one layer (its end decides what is blocked after it)")
    outside = lambda name: tuple(l for l in range(n_layers) if l not in kept[name])  # noqa: E731
    after = lambda name: tuple(range(max(kept[name]) + 1, n_layers))  # noqa: E731
    blocks = [
        *_cross_frame_blocks(layout, outside("cross_frame")),
        EdgeBlock(source="video", target="question", layers=outside("video_to_question")),
        EdgeBlock(source="question", target="last", layers=outside("question_to_last")),
        EdgeBlock(source="video", target="last", layers=outside("video_to_last")),
        EdgeBlock(source="last", target="last", layers=outside("last_to_last")),
        EdgeBlock(source="video", target="video", layers=after("video_to_question")),
        EdgeBlock(source="question", target="question", layers=after("question_to_last")),
    ]
    return KnockoutSpec(blocks=tuple(block for block in blocks if block.layers), label=label)


def random_blocking_spec(
    layout: TokenLayout,
    n_layers: int,
    *,
    seed: int,
    per_layer: Sequence[int] | Mapping[int, int] | None = None,
    total: int | None = None,
    region: str = "video",
    label: str = "Random blocking",
) -> KnockoutSpec:
    """Block exactly this many causal pairs at random among the positions from `region`'s start on.

    `per_layer`: a count for each layer (a list of n_layers counts, or {layer: count}); or `total`:
    that many (layer, pair) slots drawn uniformly over all layers. Seeded: same inputs, same pairs.
    """
    if (per_layer is None) == (total is None):
        raise ValueError("random blocking: give exactly one of per_layer= (a count per layer) or total=")
    if per_layer is not None:
        if isinstance(per_layer, Mapping):
            counts = {integer(layer, "random blocking layer"): integer(c, "random blocking count") for layer, c in per_layer.items()}
        else:
            per_layer = list(per_layer)
            if len(per_layer) != n_layers:
                raise ValueError(f"random blocking: per_layer has {len(per_layer)} counts for a model with {n_layers} layers")
            counts = {layer: integer(c, "random blocking count") for layer, c in enumerate(per_layer)}
        checked_layers(counts, n_layers, "random blocking")
    else:
        total = integer(total, "random blocking total")
        n_candidates = RandomEdges(counts={}, seed=seed, region=region).n_candidates(layout)
        if not 0 <= total <= n_candidates * n_layers:
            raise ValueError(f"random blocking: total={total} must be in 0..{n_candidates * n_layers} "
                             f"({n_candidates} causal pairs from {region!r} on, x {n_layers} layers)")
        split = np.random.default_rng(seed).multivariate_hypergeometric([n_candidates] * n_layers, total)
        counts = dict(enumerate(int(c) for c in split))
    block = RandomEdges(counts={layer: c for layer, c in counts.items() if c}, seed=seed, region=region)
    return KnockoutSpec(blocks=(block,) if block.counts else (), label=label)


def random_baseline_for(spec: KnockoutSpec, layout: TokenLayout, n_layers: int, seed: int, region: str = "video") -> KnockoutSpec:
    """Random blocking with, in every layer, as many blocked causal pairs as `spec` suppresses."""
    counts = edge_counts(spec, layout, n_layers).suppressed_per_layer
    return random_blocking_spec(layout, n_layers, seed=seed, per_layer=counts, region=region,
                                label=f"Random blocking (as many edges as {spec.label or 'the spec'})")
