"""Frame corruptions for activation patching: pure functions frames -> frames of the SAME shape.

Activation patching compares a clean run with a corrupted run position by position, so the
corrupted video must produce exactly the same token layout: same number of frames, same size.
Every function here returns a new ``uint8 [T, H, W, 3]`` array of the input's shape and dtype and
never modifies its input. Frame indices are 0-based and must lie in ``[0, T)``; a bad index
raises and names T.

Temporal corruptions (reverse, shuffle, freeze, drop_and_repeat, swap_spans) keep every frame's
content and change only when it is shown, so they isolate the use of temporal order. Appearance
corruptions (gaussian_noise, blank, substitute) change what is shown. To name a corruption in a
JSON result record, use the specs in :mod:`tl_video.video.corruption_specs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
from jaxtyping import UInt8

from tl_video.video.frames import check_frames

__all__ = [
    "reverse",
    "shuffle",
    "permutation_for_shuffle",
    "freeze",
    "drop_and_repeat",
    "swap_spans",
    "gaussian_noise",
    "blank",
    "substitute",
]

Frames = UInt8[np.ndarray, "frames height width 3"]


def _index(name: str, value: object, num_frames: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int frame index, got {value!r} ({type(value).__name__}).")
    if not 0 <= value < num_frames:
        raise ValueError(f"{name}={value} is out of range: the video has {num_frames} frames (valid 0..{num_frames - 1}).")
    return int(value)


def _indices(name: str, values: object, num_frames: int) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence of int frame indices, got {values!r}.")
    if len(values) == 0:
        raise ValueError(f"{name} is empty: name at least one frame (the video has {num_frames} frames).")
    return [_index(f"{name}[{i}]", v, num_frames) for i, v in enumerate(values)]


def _need_two_frames(name: str, frames: Frames) -> None:
    if frames.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 frames to change anything; the video has {frames.shape[0]}.")


def reverse(frames: Frames) -> Frames:
    """The frames in reverse temporal order."""
    frames = check_frames(frames)
    _need_two_frames("reverse", frames)
    return frames[::-1].copy()


def permutation_for_shuffle(num_frames: int, seed: int) -> np.ndarray:
    """The frame order :func:`shuffle` uses: a seeded random permutation that is never the identity."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    rng = np.random.default_rng(int(seed))
    identity = np.arange(num_frames)
    while True:
        order = rng.permutation(num_frames)
        if not np.array_equal(order, identity):
            return order


def shuffle(frames: Frames, seed: int) -> Frames:
    """The frames in a seeded random order, guaranteed to differ from the original order.

    A "shuffle" that happened to be the identity would make the corrupted run equal the clean run
    (likely for few frames: 1 in 2 for T = 2), so identity draws are rejected.
    """
    frames = check_frames(frames)
    _need_two_frames("shuffle", frames)
    return frames[permutation_for_shuffle(frames.shape[0], seed)].copy()


def freeze(frames: Frames, index: int) -> Frames:
    """Every frame replaced by frame ``index``: a still video with no motion."""
    frames = check_frames(frames)
    i = _index("index", index, frames.shape[0])
    return np.repeat(frames[i : i + 1], frames.shape[0], axis=0)


def drop_and_repeat(frames: Frames, indices: Sequence[int]) -> Frames:
    """Frames at ``indices`` dropped, each replaced by the nearest earlier frame that was kept.

    Frame 0 has no earlier frame, so it cannot be dropped (use :func:`blank` or :func:`freeze`).
    """
    frames = check_frames(frames)
    dropped = set(_indices("indices", indices, frames.shape[0]))
    if 0 in dropped:
        raise ValueError("drop_and_repeat cannot drop frame 0: there is no earlier frame to repeat; use blank or freeze.")
    source = np.arange(frames.shape[0])
    for i in range(1, frames.shape[0]):
        if i in dropped:
            source[i] = source[i - 1]
    return frames[source].copy()


def swap_spans(frames: Frames, a: tuple[int, int], b: tuple[int, int]) -> Frames:
    """Spans ``a`` and ``b`` (half-open ``(start, stop)`` frame ranges) exchanged in time.

    The spans must be non-empty and must not overlap; they may differ in length (the frames between
    them shift), so the output still has T frames.
    """
    frames = check_frames(frames)
    n = frames.shape[0]
    spans = []
    for name, span in (("a", a), ("b", b)):
        if isinstance(span, (str, bytes)) or not isinstance(span, Sequence) or len(span) != 2:
            raise TypeError(f"span {name} must be a (start, stop) pair of frame indices, got {span!r}.")
        lo, hi = span
        for part, value in (("start", lo), ("stop", hi)):
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise TypeError(f"span {name} {part} must be an int, got {value!r}.")
        if not 0 <= lo < hi <= n:
            raise ValueError(
                f"span {name}=({lo}, {hi}) is not a non-empty half-open range inside the video's {n} frames "
                f"(need 0 <= start < stop <= {n})."
            )
        spans.append((int(lo), int(hi)))
    (a0, a1), (b0, b1) = sorted(spans)
    if b0 < a1:
        raise ValueError(f"spans {tuple(spans[0])} and {tuple(spans[1])} overlap; swap non-overlapping spans.")
    order = np.r_[0:a0, b0:b1, a1:b0, a0:a1, b1:n]
    return frames[order].copy()


def gaussian_noise(frames: Frames, std: float, seed: int) -> Frames:
    """Frames plus seeded i.i.d. Gaussian pixel noise of standard deviation ``std`` (in 0..255 units),
    rounded and clipped back to uint8."""
    frames = check_frames(frames)
    if isinstance(std, bool) or not isinstance(std, Real) or not math.isfinite(std) or std <= 0:
        raise ValueError(f"std must be a positive number of pixel levels (0..255 scale), got {std!r}.")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    noise = np.random.default_rng(int(seed)).normal(0.0, float(std), size=frames.shape)
    return np.clip(np.rint(frames + noise), 0, 255).astype(np.uint8)


def blank(frames: Frames, indices: Sequence[int], value: int | tuple[int, int, int] = 0) -> Frames:
    """Frames at ``indices`` set to a constant: a grey level 0..255 or an RGB triple."""
    frames = check_frames(frames)
    chosen = _indices("indices", indices, frames.shape[0])
    levels = (value,) if isinstance(value, Integral) else value
    if (
        isinstance(levels, (str, bytes))
        or not isinstance(levels, Sequence)
        or len(levels) not in (1, 3)
        or any(isinstance(v, bool) or not isinstance(v, Integral) or not 0 <= v <= 255 for v in levels)
    ):
        raise ValueError(f"value must be an int 0..255 or an (r, g, b) triple of them, got {value!r}.")
    out = frames.copy()
    out[chosen] = np.asarray(levels, dtype=np.uint8)
    return out


def substitute(frames: Frames, other: Frames, indices: Sequence[int] | None = None) -> Frames:
    """Frames replaced by those of another video of the same shape (all of them, or only ``indices``).

    Both stacks must already have the same T, height and width: sample and resize both videos the
    same way first (e.g. ``read_video`` with the same ``num_frames`` on videos of equal size).
    """
    frames = check_frames(frames)
    other = check_frames(other, name="other")
    if other.shape != frames.shape:
        raise ValueError(
            f"substitute needs frames of the same shape, got frames {tuple(frames.shape)} and other "
            f"{tuple(other.shape)}; sample both videos with the same num_frames and resize them to the same size."
        )
    if indices is None:
        return other.copy()
    chosen = _indices("indices", indices, frames.shape[0])
    out = frames.copy()
    out[chosen] = other[chosen]
    return out
