"""Which frames of a video to decode: pure functions of (frame count, fps, window).

The information-flow study (docs/methods.md, "Data") samples T frames (8 by default) at the midpoints
of T equal segments of the window [start, end] seconds. Here a frame ``i`` is displayed during
``[i / fps, (i + 1) / fps)``; the frame sampled for segment ``k`` is the one on screen at the
segment's midpoint ``t_k = start + (k + 0.5) * (end - start) / T``. A video with fewer frames than
T in the window yields repeated indices; :func:`tl_video.video.read_video` lets the caller demand a
minimum number of distinct frames.

TVBench and MVBench evaluation code uses a slightly different rule that works in frame-index space
(``get_index``: rounded segment offsets); :func:`mvbench_segment_indices` reproduces it for
comparisons with published numbers. The two usually agree or differ by one frame.

The timing model assumes a constant frame rate (``fps`` is the average rate, as decord reports it),
which is what every VideoQA benchmark loader assumes too.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
from jaxtyping import Int64

from tl_video.video.errors import InvalidTimeRangeError

__all__ = [
    "resolve_window",
    "segment_midpoint_indices",
    "mvbench_segment_indices",
    "num_frames_at_fps",
]


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}.")
    return int(value)


def _check_rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of frames per second, got {value!r}.")
    return float(value)


def resolve_window(
    start: float | None,
    end: float | None,
    *,
    duration: float,
    fps: float,
    source: str = "video",
) -> tuple[float, float]:
    """Fill in and validate a ``[start, end]`` window in seconds; return it as floats.

    ``None`` means the beginning (``start``) or the end (``end``) of the video. ``end`` may overrun
    the duration by at most one frame period (annotations are often rounded up) and is then clamped
    to the duration; any larger overrun, a negative ``start``, or ``start >= end`` raises.

    Raises:
        InvalidTimeRangeError: the window is not inside ``[0, duration]`` or is empty.
    """
    fps = _check_rate("fps", fps)
    tolerance = 1.0 / fps
    fix = f"pass start/end in seconds within [0, {duration:.3f}] with start < end, or None for the whole video"
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)):
            raise InvalidTimeRangeError(f"{source}: {name}={value!r} is not a finite number of seconds; {fix}.")
    lo = 0.0 if start is None else float(start)
    hi = duration if end is None else float(end)
    if lo < 0:
        raise InvalidTimeRangeError(f"{source}: start={lo} s is negative; {fix}.")
    if lo >= duration:
        raise InvalidTimeRangeError(f"{source}: start={lo} s is not before the end of the video ({duration:.3f} s); {fix}.")
    if hi > duration + tolerance:
        raise InvalidTimeRangeError(
            f"{source}: end={hi} s is past the end of the video ({duration:.3f} s, {round(duration * fps)} frames "
            f"at {fps:g} fps); {fix}."
        )
    hi = min(hi, duration)
    if lo >= hi:
        raise InvalidTimeRangeError(f"{source}: start={lo} s is not before end={hi} s; {fix}.")
    return lo, hi


def segment_midpoint_indices(
    frame_count: int,
    fps: float,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
) -> Int64[np.ndarray, "num_frames"]:
    """Indices of the frames on screen at the midpoints of ``num_frames`` equal segments of the window.

    Args:
        frame_count: number of frames in the video (>= 1).
        fps: frame rate of the video (frames per second, > 0).
        num_frames: T, how many frames to sample (>= 1). May exceed the frames in the window; indices
            then repeat.
        start, end: the window in seconds; ``None`` for the start/end of the video (see
            :func:`resolve_window`).

    Returns:
        int64 array of length T, non-decreasing, each in ``[0, frame_count)``, each frame's display
        interval containing its segment midpoint (so it overlaps the window).
    """
    frame_count = _check_count("frame_count", frame_count)
    num_frames = _check_count("num_frames", num_frames)
    fps = _check_rate("fps", fps)
    lo, hi = resolve_window(start, end, duration=frame_count / fps, fps=fps)
    midpoints = lo + (np.arange(num_frames, dtype=np.float64) + 0.5) * ((hi - lo) / num_frames)
    indices = np.floor(midpoints * fps).astype(np.int64)
    return np.clip(indices, 0, frame_count - 1)


def mvbench_segment_indices(
    frame_count: int,
    fps: float,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
) -> Int64[np.ndarray, "num_frames"]:
    """The frame indices MVBench/TVBench evaluation code (``get_index``) picks, for paper comparisons.

    The reference rounds the window to frame indices ``[round(start * fps), min(round(end * fps),
    frame_count - 1)]``, splits that index range into T segments and takes
    ``int(start_idx + seg / 2 + round(seg * k))``. Identical to the reference, except that a start
    rounding past the last frame is clipped to it (the reference then returns out-of-range indices).
    """
    frame_count = _check_count("frame_count", frame_count)
    num_frames = _check_count("num_frames", num_frames)
    fps = _check_rate("fps", fps)
    lo, hi = resolve_window(start, end, duration=frame_count / fps, fps=fps)
    max_frame = frame_count - 1
    start_idx = min(max(0, round(lo * fps)), max_frame)
    end_idx = min(round(hi * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_frames
    indices = [int(start_idx + seg_size / 2 + np.round(seg_size * k)) for k in range(num_frames)]
    return np.asarray(indices, dtype=np.int64)


def num_frames_at_fps(start: float, end: float, sample_fps: float) -> int:
    """How many frames sampling ``[start, end]`` at ``sample_fps`` gives: ``round(duration * fps)``, at least 1."""
    sample_fps = _check_rate("sample fps", sample_fps)
    return max(1, round((end - start) * sample_fps))
