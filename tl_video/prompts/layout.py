"""The token layout: where every segment of one prepared input lives, and what each video token is.

Spans are half-open [start, end). Video tokens are flattened (frame, row, col) in the order the
front end emits them; for tubelet models one "frame" index is one tubelet (2 frames), as
`frame_unit` says. Template text between segments (role tags, separators) belongs to no group
(docs/methods.md).

Selectors are the only way the rest of the library names positions, and this module is the one
place they are resolved (`TokenLayout.positions`). A selector names a set of positions:

    atom     := all | last | video | video_tokens | text | question | question_without_options | option[B]
              | true_option | false_options | answer_prompt | system | <any other segment name>
              | frame[i] | frame[a:b]            (the group of frame i / of frames a..b-1)
              | pos[i, j, ...] | pos[a:b]        (explicit sequence positions; negative counts from the end)
    unary    := atom | ( expr ) | ~unary | not unary          (complement within the input)
    inter    := unary { & unary }                             (intersection)
    expr     := inter { | inter  or  + inter  or  - inter }   (union, union, difference; left to right)

`video` is every frame's group: its video tokens plus any text the processor put inside the
video (VideoLLaMA3's "Time t s:" prefixes and separators, which belong to their frame);
`video_tokens` is the video tokens alone; `text` is everything outside `video`.

e.g. `video | question`, `all - video`, `~(video + last)`, `not text`, `frame[0:4] - pos[-3:]`.
Every result is sorted and without repeats. A selector that is not a string, names nothing, or
selects a frame or position outside the input raises `SelectorError`, whatever function it was
given to (knockout, patching, attention maps, `positions`).
"""

from __future__ import annotations

import bisect
import difflib
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


class SelectorError(KeyError, IndexError, ValueError):
    """A selector that is not a string, names nothing in this input, or is out of range.

    Subclasses KeyError, IndexError and ValueError so that any of them catches it; every
    function that takes selectors raises this one type (it is raised only in this module).
    """

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def check_selector(value: object, what: str = "selector") -> str:
    """`value` if it is a non-empty string (resolving it needs a layout); else SelectorError naming `what`."""
    if not isinstance(value, str) or not value.strip():
        raise SelectorError(f"{what} must be a non-empty selector string such as 'video' or 'frame[0:2]', got {value!r}")
    return value


_ATOM = r"[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?"
_TOKEN = re.compile(rf"\s*(?:(?P<op>[|+\-&~()])|(?P<word>{_ATOM}))")
_INDEXED = re.compile(r"^(?P<name>frame|pos)\[(?P<inside>[^\]]*)\]$")
_SLICE = re.compile(r"^\s*(?P<start>-?\d*)\s*:\s*(?P<stop>-?\d*)\s*$")
_INDEX_LIST = re.compile(r"^\s*-?\d+\s*(?:,\s*-?\d+\s*)*,?\s*$")
_BUILTINS = ("all", "last", "video", "video_tokens", "text", "frame[i]", "frame[a:b]", "pos[i,j,...]", "pos[a:b]")
_OPERATORS = "combine with | or + (union), - (difference), & (intersection), ~ or not (complement), ( )"


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
    # Per frame, text the processor inserted into the video run that belongs to that frame's group
    # (VideoLLaMA3's "Time t s:" prefix and the "," before it); empty for most families.
    frame_text: tuple[tuple[int, ...], ...] = ()

    @property
    def n_frames(self) -> int:
        return 1 + max((frame for frame, _, _ in self.video_grid), default=-1)

    def frame_positions(self, frame: int) -> Int[torch.Tensor, "n"]:
        """The video tokens of one frame (without its inserted text; `frame[i]` includes that)."""
        return torch.tensor([p for p, (f, _, _) in zip(self.video_positions, self.video_grid) if f == frame], dtype=torch.long)

    def _frame_group(self, frames: set[int]) -> set[int]:
        tokens = {p for p, (f, _, _) in zip(self.video_positions, self.video_grid) if f in frames}
        return tokens | {p for f, positions in enumerate(self.frame_text) if f in frames for p in positions}

    def positions(self, selector: str, role: str | None = None) -> Int[torch.Tensor, "n"]:
        """Sorted sequence indices named by a selector (grammar in the module docstring).

        `role` (e.g. "knockout group") prefixes error messages so they say where the selector came from.
        """
        where = f"{role} {selector!r}: " if role else ""
        if not isinstance(selector, str):
            raise SelectorError(
                f"{role + ': ' if role else ''}a selector must be a string such as 'video' or 'frame[2]', "
                f"got {type(selector).__name__} {selector!r}"
            )
        try:
            selected = self._select(selector)
        except SelectorError as error:
            raise SelectorError(where + str(error)) from None
        return torch.tensor(sorted(selected), dtype=torch.long)

    def valid_selectors(self) -> list[str]:
        """Every atom this input accepts, each named once."""
        names = [*_BUILTINS, *(name for name in self.segments if not name.startswith("option["))]
        names += [f"option[{letter}]" for letter in self.option_letters]
        if self.option_letters and self.true_option is not None:
            names += ["true_option", "false_options"]
        return list(dict.fromkeys(names))

    def _select(self, selector: str) -> set[int]:
        text = selector.strip()
        if not text:
            raise SelectorError(f"empty selector; valid: {', '.join(self.valid_selectors())}")
        if text in self.segments or text in ("all", "last", "video", "video_tokens", "text", "true_option", "false_options"):
            return self._atom(text)
        return _Parser(text, self).parse()

    def _atom(self, name: str) -> set[int]:
        if name == "all":
            return set(range(self.n_tokens))
        if name == "last":
            return {self.n_tokens - 1}
        if name == "video":
            return set(self.video_positions).union(*self.frame_text)
        if name == "video_tokens":
            return set(self.video_positions)
        if name == "text":
            return set(range(self.n_tokens)) - self._atom("video")
        if name in ("true_option", "false_options"):
            return self._options(true=name == "true_option")
        if name in self.segments:
            return set(self.segments[name].positions().tolist())
        indexed = _INDEXED.match(name)
        if indexed:
            return self._frames(indexed["inside"]) if indexed["name"] == "frame" else self._pos(indexed["inside"])
        close = difflib.get_close_matches(name, self.valid_selectors(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        extra = ""
        if name in ("question", "question_without_options") and not self.option_letters:
            extra = " (a prompt written with the video placeholder has no question segment; pass a PromptText with spans)"
        raise SelectorError(
            f"unknown selector {name!r}{hint}{extra}; valid: {', '.join(self.valid_selectors())}; {_OPERATORS}"
        )

    def _frames(self, inside: str) -> set[int]:
        n = self.n_frames
        unit = self.frame_unit
        if _SLICE.match(inside):
            match = _SLICE.match(inside)
            start, stop = (int(match["start"]) if match["start"] else None), (int(match["stop"]) if match["stop"] else None)
            frames = list(range(n))[start:stop]
            if not frames:
                raise SelectorError(f"frame[{inside}] selects no {unit} of the {n} {unit}s of this input")
        elif re.fullmatch(r"\s*-?\d+\s*", inside):
            index = int(inside)
            if not -n <= index < n:
                raise SelectorError(f"frame[{index}] is out of range: this input has {n} {unit}s")
            frames = [index % n]
        else:
            raise SelectorError(f"frame[{inside}]: write frame[i] or frame[a:b] with integers")
        return self._frame_group(set(frames))

    def _pos(self, inside: str) -> set[int]:
        n = self.n_tokens
        match = _SLICE.match(inside)
        if match:
            start, stop = (int(match["start"]) if match["start"] else None), (int(match["stop"]) if match["stop"] else None)
            return set(range(n)[start:stop])
        if not _INDEX_LIST.match(inside):
            raise SelectorError(f"pos[{inside}]: write pos[i, j, ...] or pos[a:b] with integers")
        indices = [int(part) for part in inside.split(",") if part.strip()]
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise SelectorError(f"pos[{inside}]: position {bad[0]} is out of range: this input has {n} tokens")
        return {i % n for i in indices}

    def _options(self, true: bool) -> set[int]:
        if not self.option_letters:
            raise SelectorError(
                f"{'true_option' if true else 'false_options'}: this input has no options (prepare a multiple-choice example)"
            )
        if self.true_option is None:
            raise SelectorError("the correct option is unknown for this input (no answer was given)")
        letters = [l for l in self.option_letters if (l == self.true_option) == true]
        return {p for l in letters for p in self.segments[f"option[{l}]"].positions().tolist()}

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
        if (self.video_positions, self.video_grid, self.frame_text) != (other.video_positions, other.video_grid, other.frame_text):
            raise ValueError("layouts differ in their video tokens (positions or (frame, row, col) grid)")

    def __repr__(self) -> str:
        rows = [f"TokenLayout({self.n_tokens} tokens, {len(self.video_positions)} video tokens, {self.n_frames} {self.frame_unit}s)"]
        rows += [f"  {name:<16} [{span.start}, {span.end})" for name, span in self.segments.items()]
        return "\n".join(rows)


class _Parser:
    """Recursive descent over the selector grammar; sets of positions all the way down."""

    def __init__(self, text: str, layout: TokenLayout):
        self.text, self.layout, self.tokens, self.at = text, layout, [], 0
        cursor = 0
        while cursor < len(text):
            match = _TOKEN.match(text, cursor)
            if not match or match.end() == cursor:
                if text[cursor:].strip() == "":
                    break
                raise SelectorError(f"cannot read selector {text!r} at {text[cursor:]!r}; {_OPERATORS}")
            self.tokens.append(match["op"] or match["word"])
            cursor = match.end()

    def parse(self) -> set[int]:
        result = self._expr()
        if self.at != len(self.tokens):
            raise SelectorError(f"cannot read selector {self.text!r}: unexpected {self.tokens[self.at]!r}")
        return result

    def _peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _next(self) -> str:
        token = self._peek()
        if token is None:
            raise SelectorError(f"selector {self.text!r} ends too early; {_OPERATORS}")
        self.at += 1
        return token

    def _expr(self) -> set[int]:
        result = self._inter()
        while self._peek() in ("|", "+", "-"):
            op = self._next()
            right = self._inter()
            result = result - right if op == "-" else result | right
        return result

    def _inter(self) -> set[int]:
        result = self._unary()
        while self._peek() == "&":
            self._next()
            result = result & self._unary()
        return result

    def _unary(self) -> set[int]:
        token = self._next()
        if token in ("~", "not"):
            return set(range(self.layout.n_tokens)) - self._unary()
        if token == "(":
            result = self._expr()
            if self._next() != ")":
                raise SelectorError(f"selector {self.text!r}: missing ')'")
            return result
        if token in ("|", "+", "-", "&", ")"):
            raise SelectorError(f"selector {self.text!r}: {token!r} needs a selector before it")
        return self.layout._atom(token)


def layout_from_tokens(
    tokens: Int[torch.Tensor, "pos"],
    video_mask: torch.Tensor,
    video_grid: Int[torch.Tensor, "n_video 3"],
    frame_unit: str = "frame",
    text_segments: dict[str, Span] | None = None,
    true_option: str | None = None,
    option_letters: tuple[str, ...] = (),
    video_run: Span | None = None,
    inserted_text: str | None = None,
) -> TokenLayout:
    """Build the layout from token ids and the front end's grid (never from decoded text).

    `video_run` is the span the processor put in place of the placeholder. With
    `inserted_text="next_frame"` (VideoLLaMA3), every non-video token of the run (a frame's
    "Time t s:" prefix, the "," separator before it) joins the group of the next frame's tokens,
    so `frame[i]` and `video` include it and no text leaks across a cross-frame cut.
    """
    n_tokens = int(tokens.shape[0])
    video_positions = torch.nonzero(video_mask).flatten().tolist()
    segments: dict[str, Span] = {}
    grid = [tuple(int(v) for v in row) for row in video_grid.tolist()] if video_positions else []
    n_frames = 1 + max((f for f, _, _ in grid), default=-1)
    frame_text: list[list[int]] = [[] for _ in range(n_frames)]
    if inserted_text not in (None, "next_frame"):
        raise ValueError(f"inserted_text={inserted_text!r}; valid: None, 'next_frame'")
    if inserted_text == "next_frame" and video_run is not None and video_positions:
        is_video = set(video_positions)
        for position in range(video_run.start, video_run.end):
            if position not in is_video:
                following = bisect.bisect_right(video_positions, position)  # the next video token
                frame_text[grid[following][0] if following < len(grid) else n_frames - 1].append(position)
    if any(frame_text):
        frame_text_tuple = tuple(tuple(positions) for positions in frame_text)
    else:
        frame_text_tuple = ()
    if video_positions:
        groups = {frame: sorted({p for p, (f, _, _) in zip(video_positions, grid) if f == frame} | set(frame_text[frame]))
                  for frame in range(n_frames)}
        first = min(group[0] for group in groups.values() if group)
        last = max(group[-1] for group in groups.values() if group) + 1
        segments["before_video"] = Span(0, first)
        segments["video"] = Span(first, last)
        segments["after_video"] = Span(last, n_tokens)
        for frame, group in groups.items():
            if group:
                segments[f"frame_{frame}"] = Span(group[0], group[-1] + 1)
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
        frame_text=frame_text_tuple,
    )
