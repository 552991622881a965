"""When the frames given to a model were taken: the source frame rate and each frame's source index.

Timestamped families read it (docs/families.md, "Video timing"): Qwen2.5-VL scales its M-RoPE
time axis by the sampling rate (`second_per_grid_ts = 2 / sampled fps`), Qwen3-VL writes
`<t seconds>` before every tubelet and VideoLLaMA3 writes `Time t s:` before every frame, with
`t = index / fps`. Their HF processors take it as `transformers.video_utils.VideoMetadata`;
:meth:`VideoTiming.video_metadata` builds exactly that.

A :class:`VideoTiming` comes from one of three places, recorded in ``source``:

- ``"decoded"``: a video file read by :func:`tl_video.video.read_video` (its fps, the sampled
  indices and the sampled window);
- ``"given"``: ``prepare(frames, fps=..., frame_indices=...)`` for a bare frame array;
- ``"assumed"``: a bare frame array without ``fps`` given to a timestamped family, which then
  gets its HF processor's documented default (24 fps for Qwen, 1 fps for VideoLLaMA3), frames
  taken as consecutive. The record says so, so analyses can report it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from transformers.video_utils import VideoMetadata

    from tl_video.video.decode import DecodedVideo

__all__ = ["VideoTiming", "timing_of_decoded", "timing_from_arguments", "assumed_timing", "resolve_timing", "check_fps"]

TimingSource = Literal["decoded", "given", "assumed"]


@dataclass(frozen=True)
class VideoTiming:
    """The source frame rate and source frame index of each frame a model is given.

    Attributes:
        fps: frame rate of the source video (frames per second).
        frame_indices: source frame index of each given frame, non-decreasing (a short video's
            sampling may repeat a frame).
        window_frames: how many source frames the sample was drawn from (the sampled window of a
            decoded file; ``T`` mean index steps for a bare array). HF's
            ``VideoMetadata.total_num_frames``: Qwen2.5-VL's sampling rate is
            ``len(frame_indices) / window_frames * fps``.
        source: ``"decoded"``, ``"given"`` or ``"assumed"`` (the processor's default; see the module).
    """

    fps: float
    frame_indices: tuple[int, ...]
    window_frames: int
    source: TimingSource

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    @property
    def assumed(self) -> bool:
        """True when no real timing was known and the processor's default was used."""
        return self.source == "assumed"

    @property
    def timestamps(self) -> tuple[float, ...]:
        """Seconds from the start of the source video of each frame: ``index / fps`` (HF's rule)."""
        return tuple(index / self.fps for index in self.frame_indices)

    @property
    def sampled_fps(self) -> float:
        """Frames per second of the sample: ``num_frames / window_frames * fps`` (HF's `sampled_fps`)."""
        return self.num_frames / self.window_frames * self.fps

    def video_metadata(self) -> "VideoMetadata":
        """A fresh HF `VideoMetadata` (processors mutate it) describing these frames."""
        from transformers.video_utils import VideoMetadata

        return VideoMetadata(
            total_num_frames=self.window_frames, fps=self.fps, frames_indices=list(self.frame_indices)
        )

    def check_num_frames(self, num_frames: int, name: str = "timing") -> "VideoTiming":
        """Return self if it times exactly ``num_frames`` frames, else raise naming the mismatch."""
        if self.num_frames != num_frames:
            raise ValueError(
                f"{name} times {self.num_frames} frames but the video has {num_frames}; pass the timing "
                "of these frames (e.g. the clean input's .timing for a corrupted copy of the same length)"
            )
        return self

    def __str__(self) -> str:
        indices = list(self.frame_indices)
        shown = ", ".join(map(str, indices[:6])) + (", ..." if len(indices) > 6 else "")
        note = " (processor default: no fps was given)" if self.assumed else ""
        return f"{self.fps:g} fps, frames [{shown}] of a {self.window_frames}-frame window, {self.source}{note}"


def check_fps(fps: Any, name: str = "fps") -> float:
    """``fps`` as a float, if it is a positive finite number; else one clear error."""
    if isinstance(fps, bool) or not isinstance(fps, Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(
            f"{name}={fps!r} must be a positive finite number: the frame rate of the video the frames were "
            f"taken from, e.g. {name}=25 or {name}=29.97"
        )
    return float(fps)


def check_frame_indices(frame_indices: Any, num_frames: int) -> tuple[int, ...]:
    """``frame_indices`` as a tuple of ``num_frames`` non-negative, non-decreasing ints; else one clear error."""
    fix = "pass one source-frame index per frame, in temporal order, e.g. frame_indices=[0, 3, 6, ...]"
    if not isinstance(frame_indices, np.ndarray) and hasattr(frame_indices, "detach"):  # a torch tensor
        frame_indices = frame_indices.detach().cpu().numpy()
    if isinstance(frame_indices, (str, bytes)) or not isinstance(frame_indices, (Sequence, np.ndarray)):
        raise TypeError(f"frame_indices must be a list of ints, got {type(frame_indices).__name__}; {fix}")
    if isinstance(frame_indices, np.ndarray) and frame_indices.ndim != 1:
        raise ValueError(f"frame_indices must be one-dimensional, got shape {frame_indices.shape}; {fix}")
    values = list(frame_indices)
    bad = [value for value in values if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral)]
    if bad:
        raise TypeError(f"frame_indices must hold ints (source frame numbers), got {bad[0]!r}; {fix}")
    indices = tuple(int(value) for value in values)
    if len(indices) != num_frames:
        raise ValueError(f"frame_indices has {len(indices)} entries but the video has {num_frames} frames; {fix}")
    if min(indices) < 0:
        raise ValueError(f"frame_indices must be >= 0 (source frame numbers), got {min(indices)}; {fix}")
    drops = [k for k in range(1, len(indices)) if indices[k] < indices[k - 1]]
    if drops:
        k = drops[0]
        raise ValueError(
            f"frame_indices must be in temporal order (non-decreasing), but frame {k} ({indices[k]}) comes after "
            f"{indices[k - 1]}; a reordered video (e.g. a corruption) keeps its positions' timing, so pass the "
            "original indices"
        )
    return indices


def timing_from_arguments(num_frames: int, fps: Any, frame_indices: Any = None) -> VideoTiming:
    """Timing of a bare ``num_frames``-frame array from ``prepare(..., fps=, frame_indices=)``.

    Without ``frame_indices`` the frames are consecutive source frames ``0..T-1``. The window is
    ``T`` mean index steps (``T * (last - first) / (T - 1)``, rounded), so evenly spaced indices
    ``0, s, 2s, ...`` give a sampling rate of exactly ``fps / s``.
    """
    fps = check_fps(fps)
    if frame_indices is None:
        return VideoTiming(fps=fps, frame_indices=tuple(range(num_frames)), window_frames=num_frames, source="given")
    indices = check_frame_indices(frame_indices, num_frames)
    span = indices[-1] - indices[0]
    window = num_frames if num_frames == 1 else max(1, round(num_frames * span / (num_frames - 1)))
    return VideoTiming(fps=fps, frame_indices=indices, window_frames=window, source="given")


def timing_of_decoded(video: "DecodedVideo") -> VideoTiming:
    """Timing of a :class:`DecodedVideo`: its source fps, sampled indices and sampled window."""
    window = max(1, round((video.end - video.start) * video.source_fps))
    return VideoTiming(
        fps=float(video.source_fps),
        frame_indices=tuple(int(i) for i in video.frame_indices),
        window_frames=window,
        source="decoded",
    )


def assumed_timing(num_frames: int, fps: float) -> VideoTiming:
    """The timing a processor assumes for a bare array without metadata: consecutive frames at ``fps``."""
    return VideoTiming(
        fps=float(fps), frame_indices=tuple(range(num_frames)), window_frames=num_frames, source="assumed"
    )


def resolve_timing(
    num_frames: int,
    *,
    decoded: VideoTiming | None,
    fps: Any,
    frame_indices: Any,
    timing: Any,
    default_fps: float | None,
) -> VideoTiming | None:
    """The timing of a prepared input, from exactly one source; see `prepare`.

    ``decoded``: the file's own timing (then ``fps``/``frame_indices``/``timing`` are refused);
    ``timing``: a ready :class:`VideoTiming`; ``fps`` (+ ``frame_indices``) for a bare array;
    else the family's ``default_fps`` as an ``"assumed"`` timing, or None for an untimed family.
    """
    named = (("fps", fps), ("frame_indices", frame_indices), ("timing", timing))
    given = [name for name, value in named if value is not None]
    if decoded is not None:
        if given:
            raise ValueError(
                f"{given[0]}= is for frame arrays, but a decoded video file carries its own timing ({decoded}); "
                f"drop {given[0]}=, or pass the frames array (video.frames) to time them yourself"
            )
        return decoded
    if timing is not None:
        if fps is not None or frame_indices is not None:
            raise ValueError("pass either timing= or fps= (with frame_indices=), not both: they say the same thing")
        if not isinstance(timing, VideoTiming):
            raise TypeError(
                f"timing= must be a VideoTiming (e.g. a prepared input's .timing), got {type(timing).__name__}; "
                "for a frame rate pass fps= instead"
            )
        return timing.check_num_frames(num_frames, "timing=")
    if fps is not None:
        return timing_from_arguments(num_frames, fps, frame_indices)
    if frame_indices is not None:
        raise ValueError(
            "frame_indices= needs fps= as well (a frame's time is index / fps); pass the source video's frame rate, "
            "e.g. fps=25"
        )
    return None if default_fps is None else assumed_timing(num_frames, default_fps)
