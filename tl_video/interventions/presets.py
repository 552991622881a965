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

from tl_video.interventions.knockout import EdgeBlock, Flow, KnockoutSpec, RandomEdges, edge_counts
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


ALWAYS_BLOCKED_IN_PATHWAYS: tuple[Flow, ...] = (("video", "last"), ("last", "last"))


def effective_pathway_spec(
    layout: TokenLayout,
    n_layers: int,
    cross_frame: Iterable[int],
    video_to_question: Iterable[int],
    question_to_last: Iterable[int],
    always_blocked: Iterable[Flow] = ALWAYS_BLOCKED_IN_PATHWAYS,
    label: str = "Effective pathways",
) -> KnockoutSpec:
    """Keep only the effective pathways (0-indexed layer ranges), block the edges around them.

    Cross-frame edges are kept only in `cross_frame`, Video→Question only in `video_to_question`,
    Question→Last only in `question_to_last`; `always_blocked` (Video→Last and Last→Last) in every
    layer; after `video_to_question` ends every video↔video edge (diagonal included) is blocked,
    after `question_to_last` ends every question↔question edge. Nothing else is blocked.
    """
    everything = range(n_layers)
    cross = set(checked_layers(cross_frame, n_layers, "effective pathways: cross_frame"))
    integration = set(checked_layers(video_to_question, n_layers, "effective pathways: video_to_question"))
    answer = set(checked_layers(question_to_last, n_layers, "effective pathways: question_to_last"))
    for name, layers in (("video_to_question", integration), ("question_to_last", answer)):
        if not layers:
            raise ValueError(f"effective pathways: {name} must name at least one layer (its end decides what is blocked after it)")
    outside = lambda kept: tuple(l for l in everything if l not in kept)  # noqa: E731
    after = lambda kept: tuple(range(max(kept) + 1, n_layers))  # noqa: E731
    blocks = [
        *_cross_frame_blocks(layout, outside(cross)),
        EdgeBlock(source="video", target="question", layers=outside(integration)),
        EdgeBlock(source="question", target="last", layers=outside(answer)),
        *(EdgeBlock(source=s, target=t, layers=everything) for s, t in always_blocked),
        EdgeBlock(source="video", target="video", layers=after(integration)),
        EdgeBlock(source="question", target="question", layers=after(answer)),
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
