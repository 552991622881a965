"""The information-flow paper's knockout targets as data (METHODS.md, "Sweep targets").

A preset is a function of the layout (cross-frame depends on the number of frames) and the
blocked layers that returns one `KnockoutSpec` per curve of the paper's figure: vql-to-ql gives
four specs (Video↛Question, Video↛Last, Question↛Last, Last↛Last), each swept on its own.
Users build their own specs the same way.
"""

from __future__ import annotations

from typing import Callable, Iterable

from tl_video.interventions.knockout import EdgeBlock, KnockoutSpec
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


def cross_frame(layout: TokenLayout, layers: Iterable[int]) -> list[KnockoutSpec]:
    """No cross-frame interactions: queries in frame i cannot see keys in frames < i."""
    layers = tuple(layers)
    blocks = tuple(
        EdgeBlock(source=f"frame[0:{frame}]", target=f"frame[{frame}]", layers=layers)
        for frame in range(1, layout.n_frames)
    )
    return [KnockoutSpec(blocks=blocks, label="No cross-frame interactions")]


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
