"""Decode a video file into the uint8 RGB frames a VideoLLM front end consumes.

``read_video`` is the single entry point from a file (or file object) to frames. It samples T
frames at segment midpoints of a time window (docs/methods.md, "Data"; see :mod:`tl_video.video.sampling`),
decodes them with decord and returns a :class:`DecodedVideo` that records exactly which frames were
taken and when, so a result record can say what the model saw.

Bad input fails here, loudly, rather than as a silently wrong answer later:

- a missing path raises :class:`VideoNotFoundError`;
- a file that is empty, has no video stream or no frames raises :class:`EmptyVideoError`;
- a file the demuxer or decoder rejects (corrupt, cut-off mp4, not a video) raises
  :class:`UnreadableVideoError`;
- a file that decodes but to less than its container declares (a cut-off mkv/webm: decord then
  silently returns only the frames before the cut) raises :class:`TruncatedVideoError`;
- a window outside the video raises :class:`InvalidTimeRangeError`;
- a window with fewer distinct frames than ``min_frames`` raises :class:`VideoTooShortError`.

decord only reads from a path, so a file object is first copied to a temporary file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import av
import decord
import numpy as np
from jaxtyping import Float64, Int64, UInt8

from tl_video.video.errors import (
    EmptyVideoError,
    TruncatedVideoError,
    UnreadableVideoError,
    VideoNotFoundError,
    VideoTooShortError,
)
from tl_video.video.timing import VideoTiming, timing_of_decoded
from tl_video.video.sampling import (
    mvbench_segment_indices,
    num_frames_at_fps,
    resolve_window,
    segment_midpoint_indices,
)

__all__ = ["DecodedVideo", "read_video", "DEFAULT_NUM_FRAMES"]

DEFAULT_NUM_FRAMES = 8
"""T used by the information-flow study (docs/methods.md) when neither ``num_frames`` nor ``fps`` is given."""

Sampling = Literal["midpoint", "mvbench"]


@dataclass(frozen=True, kw_only=True, eq=False)
class DecodedVideo:
    """Frames sampled from one video, with where they came from.

    Attributes:
        frames: ``uint8 [T, H, W, 3]`` RGB frames, in temporal order.
        frame_indices: the source frame index of each sampled frame (may repeat for short videos).
        timestamps: presentation time of each sampled frame in seconds, as decord reports it.
        source_fps: average frame rate of the source video.
        source_frame_count: number of frames in the source video.
        duration: ``source_frame_count / source_fps`` in seconds.
        start: start of the sampled window in seconds.
        end: end of the sampled window in seconds.
        path: the file read, or ``None`` when decoding from a file object without a name.
    """

    frames: UInt8[np.ndarray, "frames height width 3"]
    frame_indices: Int64[np.ndarray, "frames"]
    timestamps: Float64[np.ndarray, "frames"]
    source_fps: float
    source_frame_count: int
    duration: float
    start: float
    end: float
    path: str | None

    @property
    def num_frames(self) -> int:
        """T, the number of sampled frames."""
        return int(self.frames.shape[0])

    @property
    def timing(self) -> VideoTiming:
        """When the frames were taken (source fps, indices, window), as timestamped front ends need it."""
        return timing_of_decoded(self)

    @property
    def num_distinct_frames(self) -> int:
        """How many different source frames were sampled (less than T for a short video)."""
        return int(np.unique(self.frame_indices).size)

    def __repr__(self) -> str:
        t, h, w, _ = self.frames.shape
        return (
            f"DecodedVideo(path={self.path!r}, frames={t}x{h}x{w}x3, frame_indices={self.frame_indices.tolist()}, "
            f"window=[{self.start:.3f}, {self.end:.3f}] s, source={self.source_frame_count} frames "
            f"@ {self.source_fps:g} fps)"
        )


def read_video(
    path_or_fileobj: str | os.PathLike[str] | BinaryIO,
    num_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = None,
    *,
    min_frames: int = 1,
    sampling: Sampling = "midpoint",
) -> DecodedVideo:
    """Decode T frames of a video, sampled at segment midpoints of ``[start, end]`` (or at ``fps``).

    Args:
        path_or_fileobj: a video file path, or a binary file object (copied to a temporary file,
            because decord reads only from paths).
        num_frames: T, the number of frames to sample. Defaults to 8 (``DEFAULT_NUM_FRAMES``) unless
            ``fps`` is given; passing both is an error.
        start, end: the window in seconds (``None``: start/end of the video). ``end`` may overrun the
            duration by one frame period and is then clamped.
        fps: instead of a fixed T, sample ``round((end - start) * fps)`` frames (at least 1), still at
            segment midpoints, i.e. evenly at this rate.
        min_frames: raise :class:`VideoTooShortError` if the window yields fewer distinct source
            frames than this. The default 1 accepts short videos with repeated frames, as the
            paper's midpoint sampling does.
        sampling: ``"midpoint"`` (time-based, default) or ``"mvbench"`` (the index-space rule of
            MVBench/TVBench evaluation code, see :func:`mvbench_segment_indices`).

    Returns:
        A :class:`DecodedVideo` with ``uint8 [T, H, W, 3]`` RGB frames.
    """
    num_frames = _resolve_count(num_frames, fps, sampling)
    if isinstance(min_frames, bool) or not isinstance(min_frames, int) or min_frames < 1:
        raise ValueError(f"min_frames must be an int >= 1, got {min_frames!r}.")
    if sampling not in ("midpoint", "mvbench"):
        raise ValueError(f"sampling must be 'midpoint' or 'mvbench', got {sampling!r}.")

    with _local_path(path_or_fileobj) as (path, name):
        declared_duration = _probe(path, name)
        reader = _open(path, name)
        frame_count = len(reader)
        if frame_count == 0:
            raise EmptyVideoError(f"{name}: the video stream has no frames; re-export or re-download the video.")
        source_fps = float(reader.get_avg_fps())
        if not np.isfinite(source_fps) or source_fps <= 0:
            raise UnreadableVideoError(
                f"{name}: the video reports no usable frame rate ({source_fps}); re-encode it with a constant "
                "frame rate, e.g. `ffmpeg -i in.mp4 -r 25 out.mp4`."
            )
        duration = frame_count / source_fps
        _check_not_truncated(name, duration, declared_duration, source_fps)

        lo, hi = resolve_window(start, end, duration=duration, fps=source_fps, source=name)
        count = num_frames if num_frames is not None else num_frames_at_fps(lo, hi, fps)
        sampler = segment_midpoint_indices if sampling == "midpoint" else mvbench_segment_indices
        indices = sampler(frame_count, source_fps, count, lo, hi)
        distinct = int(np.unique(indices).size)
        if distinct < min_frames:
            raise VideoTooShortError(
                f"{name}: the window [{lo:.3f}, {hi:.3f}] s holds {distinct} distinct frame(s) "
                f"({frame_count} frames at {source_fps:g} fps in the whole video), fewer than min_frames={min_frames}; "
                "use a longer window or video, or lower min_frames to accept repeated frames."
            )
        frames = _decode(reader, path, indices, name)
        timestamps = np.asarray(reader.get_frame_timestamp(indices.tolist()), dtype=np.float64)[:, 0]
        del reader

    return DecodedVideo(
        frames=frames,
        frame_indices=indices,
        timestamps=timestamps,
        source_fps=source_fps,
        source_frame_count=frame_count,
        duration=duration,
        start=lo,
        end=hi,
        path=None if isinstance(name, _Anonymous) else str(name),
    )


class _Anonymous(str):
    """Display name of a file object without a ``name``; marks that there is no path to report."""


def _resolve_count(num_frames: int | None, fps: float | None, sampling: str) -> int | None:
    if num_frames is not None and fps is not None:
        raise ValueError(
            f"pass either num_frames ({num_frames}) or fps ({fps}), not both: num_frames samples a fixed T, "
            "fps samples at a rate."
        )
    if fps is not None and sampling == "mvbench":
        raise ValueError("sampling='mvbench' samples a fixed number of frames; pass num_frames instead of fps.")
    if num_frames is None:
        return DEFAULT_NUM_FRAMES if fps is None else None
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}.")
    return int(num_frames)


@contextlib.contextmanager
def _local_path(source: str | os.PathLike[str] | BinaryIO) -> Iterator[tuple[str, str]]:
    """Yield (path decord can open, name for messages); copies a file object to a temp file."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise VideoNotFoundError(
                f"video file not found: {str(path)!r} (resolved: {path.absolute()}); check the path, or the "
                "video_root your dataset reader was given."
            )
        if not path.is_file():
            raise VideoNotFoundError(f"video path is not a regular file: {str(path)!r}; pass the video file itself.")
        if path.stat().st_size == 0:
            raise EmptyVideoError(f"{path}: the file is empty (0 bytes); re-download or re-export the video.")
        yield str(path), str(path)
        return
    if not hasattr(source, "read"):
        raise TypeError(
            f"read_video takes a path or a binary file object, got {type(source).__name__}; "
            "wrap bytes in io.BytesIO(...)."
        )
    raw_name = getattr(source, "name", None)
    name = str(raw_name) if isinstance(raw_name, (str, os.PathLike)) else _Anonymous("<file object>")
    suffix = Path(str(raw_name)).suffix if isinstance(raw_name, (str, os.PathLike)) else ".mp4"
    with tempfile.TemporaryDirectory(prefix="tl_video_") as tmp:
        local = os.path.join(tmp, "video" + (suffix or ".mp4"))
        with open(local, "wb") as out:
            shutil.copyfileobj(source, out)
        if os.path.getsize(local) == 0:
            raise EmptyVideoError(f"{name}: the file object is empty (0 bytes read); did you read() it already?")
        yield local, name


def _probe(path: str, name: str) -> float | None:
    """Check the container has a video stream; return the video duration it declares, if it does."""
    try:
        with av.open(path) as container:
            streams = container.streams
            if not streams.video:
                kinds = ", ".join(sorted({s.type for s in streams})) or "none"
                raise EmptyVideoError(
                    f"{name}: the file has no video stream (streams found: {kinds}); pass a video file."
                )
            stream = streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if len(streams) == 1 and container.duration is not None:
                return container.duration / av.time_base
            return None  # several streams and no per-stream duration: the container's total may be audio
    except av.error.FFmpegError as exc:
        raise UnreadableVideoError(
            f"{name}: cannot be read as a video ({exc.strerror or exc}); the file is corrupt, truncated "
            "(an incomplete download or copy) or not a video. Re-download it or re-encode it, e.g. "
            "`ffmpeg -i in.mp4 -c:v libx264 out.mp4`."
        ) from exc


def _open(path: str, name: str) -> decord.VideoReader:
    try:
        return decord.VideoReader(path, ctx=decord.cpu(0))
    except (RuntimeError, decord.DECORDError) as exc:
        raise UnreadableVideoError(
            f"{name}: decord cannot decode this file ({_last_line(exc)}); it is corrupt or truncated "
            "(an incomplete download or copy). Re-download it or re-encode it, e.g. "
            "`ffmpeg -i in.mp4 -c:v libx264 out.mp4`."
        ) from exc


def _check_not_truncated(name: str, decoded: float, declared: float | None, fps: float) -> None:
    """Raise if the container declares clearly more video than the decoder found (a cut-off file)."""
    if declared is None:
        return
    tolerance = max(2.0 / fps, 0.05 * declared)
    if declared - decoded > tolerance:
        raise TruncatedVideoError(
            f"{name}: the container declares {declared:.3f} s of video but only {decoded:.3f} s "
            f"({round(decoded * fps)} frames) can be decoded; the file is truncated (an incomplete download or copy). "
            "Re-download it."
        )


def _decode(
    reader: decord.VideoReader, path: str, indices: Int64[np.ndarray, "frames"], name: str
) -> UInt8[np.ndarray, "frames height width 3"]:
    """Decode the frames at ``indices``; check the result is exactly one RGB frame per index.

    decord's batch read fails on some valid videos (widths 16, 24, 48 and 72: "DECORDArrayCopyFromTo:
    The size must exactly match", its single-frame read then returns mis-shaped buffers), so a failed
    batch is retried by decoding the stream in order with PyAV, which also rejects truncated files.
    """
    try:
        frames = _as_numpy(reader.get_batch(indices.tolist()))
    except (RuntimeError, decord.DECORDError):
        frames = _decode_sequentially(path, indices, name)
    if frames.shape[0] != len(indices) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise UnreadableVideoError(
            f"{name}: asked the decoder for {len(indices)} frames, got an array of shape {tuple(frames.shape)}; "
            "the file is corrupt or truncated. Re-download it or re-encode it."
        )
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _decode_sequentially(
    path: str, indices: Int64[np.ndarray, "frames"], name: str
) -> UInt8[np.ndarray, "frames height width 3"]:
    """Decode frames ``0..max(indices)`` with PyAV in presentation order and keep those at ``indices``."""
    wanted = {int(i) for i in indices}
    last = max(wanted)
    kept: dict[int, np.ndarray] = {}
    try:
        with av.open(path) as container:
            for position, frame in enumerate(container.decode(video=0)):
                if position in wanted:
                    kept[position] = frame.to_ndarray(format="rgb24")
                if position >= last:
                    break
    except av.error.FFmpegError as exc:
        raise UnreadableVideoError(
            f"{name}: decoding frames {sorted(wanted)} failed ({exc.strerror or exc}); the file is corrupt or "
            "truncated. Re-download it or re-encode it, e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`."
        ) from exc
    if len(kept) < len(wanted):
        raise UnreadableVideoError(
            f"{name}: the stream ended after {len(kept)} of the frames {sorted(wanted)}; the file is truncated. "
            "Re-download it."
        )
    return np.stack([kept[int(i)] for i in indices])


def _as_numpy(array: object) -> np.ndarray:
    """decord NDArray (or a torch tensor, if the caller switched decord's bridge) as numpy."""
    if hasattr(array, "asnumpy"):
        return array.asnumpy()
    if hasattr(array, "cpu"):
        return array.cpu().numpy()
    return np.asarray(array)


def _last_line(exc: BaseException) -> str:
    """The decoder's own message without decord's "[time] source.cc:line:" prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", lines[-1])
