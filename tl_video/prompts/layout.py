"""The token layout: where every segment of one prepared input lives, and what each video token is.

Spans are half-open [start, end). Video tokens are flattened (frame, row, col) in the order the
front end emits them; for tubelet models one "frame" index is one tubelet (2 frames), as
`frame_unit` says. Selectors are the only way the rest of the library names positions:
`video`, `frame[2]`, `frame[2:4]`, `text`, `last`, `all`, `question`, `question_without_options`,
`option[B]`, `true_option`, `false_options`, `answer_prompt`, `system`, or any other segment name.
Template text between segments (role tags, separators) belongs to no group (METHODS.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from jaxtyping import Int


@dataclass(frozen=True)
class Span:
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"invalid span [{self.start}, {self.end})")

    def __len__(self) -> int:
        return self.end - self.start

    def positions(self) -> Int[torch.Tensor, "n"]:
        return torch.arange(self.start, self.end)


_FRAME_SELECTOR = re.compile(r"^frame\[(?P<start>-?\d*)(?P<colon>:?)(?P<stop>-?\d*)\]$")


@dataclass(frozen=True)
class TokenLayout:
    """Segments of one prepared input plus each video token's (frame, row, col)."""

    n_tokens: int
    segments: dict[str, Span]
    video_positions: tuple[int, ...]  # sequence index of each video token, in token order
    video_grid: tuple[tuple[int, int, int], ...]  # (frame, row, col) of each video token
    frame_unit: str = "frame"
    true_option: str | None = None  # letter of the correct option, when the input is multiple choice
    option_letters: tuple[str, ...] = ()

    @property
    def n_frames(self) -> int:
        return 1 + max((frame for frame, _, _ in self.video_grid), default=-1)

    def frame_positions(self, frame: int) -> Int[torch.Tensor, "n"]:
        return torch.tensor([p for p, (f, _, _) in zip(self.video_positions, self.video_grid) if f == frame], dtype=torch.long)

    def positions(self, selector: str) -> Int[torch.Tensor, "n"]:
        """Sequence indices named by a selector (the one place selectors are resolved)."""
        selector = selector.strip()
        if selector == "all":
            return torch.arange(self.n_tokens)
        if selector == "last":
            return torch.tensor([self.n_tokens - 1])
        if selector == "video":
            return torch.tensor(self.video_positions, dtype=torch.long)
        if selector == "text":
            is_video = torch.zeros(self.n_tokens, dtype=torch.bool)
            is_video[list(self.video_positions)] = True
            return torch.nonzero(~is_video).flatten()
        match = _FRAME_SELECTOR.match(selector)
        if match:
            return self._frames(match)
        if selector in ("true_option", "false_options"):
            return self._options(true=selector == "true_option")
        if selector in self.segments:
            return self.segments[selector].positions()
        valid = ["all", "last", "video", "text", "frame[i]", "frame[a:b]", *self.segments]
        if self.option_letters:
            valid += ["true_option", "false_options"]
        raise KeyError(f"unknown selector {selector!r}; valid: {', '.join(valid)}")

    def _frames(self, match: re.Match) -> Int[torch.Tensor, "n"]:
        n = self.n_frames
        start = int(match["start"]) if match["start"] else 0
        if not match["colon"]:
            if not -n <= start < n:
                raise IndexError(f"frame[{start}] is out of range: this input has {n} {self.frame_unit}s")
            frames = [start % n]
        else:
            stop = int(match["stop"]) if match["stop"] else n
            frames = list(range(n))[start:stop]
            if not frames:
                raise IndexError(f"frame[{match['start']}:{match['stop']}] selects no frame of {n}")
        return torch.cat([self.frame_positions(frame) for frame in frames])

    def _options(self, true: bool) -> Int[torch.Tensor, "n"]:
        if not self.option_letters:
            raise KeyError("this input has no options (prepare a multiple-choice example)")
        if self.true_option is None:
            raise KeyError("the correct option is unknown for this input (no answer was given)")
        letters = [l for l in self.option_letters if (l == self.true_option) == true]
        if not letters:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat([self.segments[f"option[{l}]"].positions() for l in letters])

    def on_video_grid(self, values: torch.Tensor) -> torch.Tensor:
        """[..., n_video_tokens] -> [..., frame, row, col]; grid cells without a token are NaN."""
        grid = torch.tensor(self.video_grid, dtype=torch.long)
        shape = tuple(int(grid[:, axis].max()) + 1 for axis in range(3))
        table = torch.full((*values.shape[:-1], *shape), float("nan"))
        table[..., grid[:, 0], grid[:, 1], grid[:, 2]] = values.float().cpu()
        return table

    def check_same_as(self, other: "TokenLayout") -> None:
        """Raise if two layouts differ (clean vs corrupted inputs), naming the first difference."""
        if self.n_tokens != other.n_tokens:
            raise ValueError(f"layouts differ: {self.n_tokens} vs {other.n_tokens} tokens")
        for name in sorted(set(self.segments) | set(other.segments)):
            if self.segments.get(name) != other.segments.get(name):
                raise ValueError(f"layouts differ at segment {name!r}: {self.segments.get(name)} vs {other.segments.get(name)}")
        if self.video_positions != other.video_positions or self.video_grid != other.video_grid:
            raise ValueError("layouts differ in their video tokens (positions or (frame, row, col) grid)")

    def __repr__(self) -> str:
        rows = [f"TokenLayout({self.n_tokens} tokens, {len(self.video_positions)} video tokens, {self.n_frames} {self.frame_unit}s)"]
        rows += [f"  {name:<16} [{span.start}, {span.end})" for name, span in self.segments.items()]
        return "\n".join(rows)


def layout_from_tokens(
    tokens: Int[torch.Tensor, "pos"],
    video_mask: torch.Tensor,
    video_grid: Int[torch.Tensor, "n_video 3"],
    frame_unit: str = "frame",
    text_segments: dict[str, Span] | None = None,
    true_option: str | None = None,
    option_letters: tuple[str, ...] = (),
) -> TokenLayout:
    """Build the layout from token ids and the front end's grid (never from decoded text)."""
    n_tokens = int(tokens.shape[0])
    video_positions = torch.nonzero(video_mask).flatten().tolist()
    segments: dict[str, Span] = {}
    if video_positions:
        first, last = video_positions[0], video_positions[-1] + 1
        segments["before_video"] = Span(0, first)
        segments["video"] = Span(first, last)
        segments["after_video"] = Span(last, n_tokens)
        grid = [tuple(int(v) for v in row) for row in video_grid.tolist()]
        for frame in sorted({f for f, _, _ in grid}):
            frame_positions = [p for p, (f, _, _) in zip(video_positions, grid) if f == frame]
            segments[f"frame_{frame}"] = Span(frame_positions[0], frame_positions[-1] + 1)
    else:
        grid = []
    segments.update(text_segments or {})
    segments["last"] = Span(n_tokens - 1, n_tokens)
    return TokenLayout(
        n_tokens=n_tokens,
        segments=segments,
        video_positions=tuple(video_positions),
        video_grid=tuple(grid),
        frame_unit=frame_unit,
        true_option=true_option,
        option_letters=option_letters,
    )
