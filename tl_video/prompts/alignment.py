"""Map named character spans of the rendered text to token positions of the processed input.

The processor expands the single video placeholder into a run of tokens (plus, for some
families, wrapper tokens). We tokenize the rendered text ourselves with offsets, check that
every token before and after the placeholder is identical in the processor's ids, and shift
positions after the video by the run's length. Everything comes from token ids and offsets.

Overlap rule: a segment covers every token that carries any of its characters. Tokenizers glue
a leading space (byte-level BPE "Ġ", SentencePiece "▁") or a newline to the next word, so a
token may start before the segment it belongs to (" Best" of "ASSISTANT: Best option:("); a
token shared by two segments belongs to both.
"""

from __future__ import annotations

from typing import Any

import torch

from tl_video.prompts.layout import Span


def token_spans(
    tokenizer: Any,
    rendered: str,
    processed_ids: torch.Tensor,
    placeholder_id: int,
    char_spans: dict[str, tuple[int, int]],
) -> dict[str, Span]:
    """Token spans (in `processed_ids`) of each named character span of `rendered`."""
    ids, offsets, at, shift = _align(tokenizer, rendered, processed_ids, placeholder_id)
    spans: dict[str, Span] = {}
    video_start, video_end = offsets[at]
    for name, (char_start, char_end) in char_spans.items():
        if char_start < video_end and video_start < char_end:
            raise ValueError(
                f"segment {name!r} (characters {char_start}..{char_end}) contains the video placeholder; "
                "a text segment must lie before or after the video"
            )
        inside = [
            index for index, (start, end) in enumerate(offsets)
            if start < char_end and char_start < end and char_start < char_end and index != at
        ]
        if not inside:
            raise ValueError(f"segment {name!r} (characters {char_start}..{char_end}) holds no token")
        first, last = inside[0], inside[-1]
        first, last = (first + shift if first > at else first), (last + shift if last > at else last)
        spans[name] = Span(first, last + 1)
    return spans


def placeholder_run(tokenizer: Any, rendered: str, processed_ids: torch.Tensor, placeholder_id: int) -> Span:
    """The span of `processed_ids` that the processor put in place of the one video placeholder
    (video tokens plus any text it inserts there, e.g. VideoLLaMA3's per-frame timestamps)."""
    _, _, at, shift = _align(tokenizer, rendered, processed_ids, placeholder_id)
    return Span(at, at + shift + 1)


def _align(tokenizer: Any, rendered: str, processed_ids: torch.Tensor, placeholder_id: int):
    """(ids, offsets, placeholder index, run length - 1) after checking the text around the run is unchanged."""
    encoded = tokenizer(rendered, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    offsets = [tuple(pair) for pair in encoded["offset_mapping"]]
    processed = processed_ids.tolist()
    if ids.count(placeholder_id) != 1:
        raise ValueError(f"the rendered prompt must tokenize to one video placeholder, found {ids.count(placeholder_id)}")
    at = ids.index(placeholder_id)
    suffix = ids[at + 1 :]
    if processed[:at] != ids[:at] or processed[len(processed) - len(suffix) :] != suffix:
        raise ValueError(
            "the processor changed the text tokens around the video placeholder; cannot place the "
            "prompt's segments (does the processor insert text of its own?)"
        )
    return ids, offsets, at, len(processed) - len(ids)
