"""Write uint8 RGB frames to a real video file (H.264 or MPEG-4 Part 2 in yuv420p) with PyAV.

Used by the tests (which decode what they wrote, instead of mocking the decoder) and by the
synthetic benchmark. yuv420p is what every decoder and VideoLLM pipeline reads; it subsamples
chroma 2x2, so widths and heights must be even, and colours come back within a few levels, not
bit-exact. Frame ``i`` gets presentation time ``i / fps``.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from numbers import Real
from pathlib import Path

import av
import numpy as np
from jaxtyping import UInt8

from tl_video.video.frames import check_frames

__all__ = ["write_video", "default_codec"]

_CODECS = ("libx264", "mpeg4")


def default_codec() -> str:
    """``"libx264"`` when this PyAV build has it, else ``"mpeg4"`` (always built in)."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(
    path: str | os.PathLike[str],
    frames: UInt8[np.ndarray, "frames height width 3"],
    fps: float,
    *,
    codec: str | None = None,
    crf: int = 18,
) -> Path:
    """Encode ``frames`` (``uint8 [T, H, W, 3]`` RGB, H and W even) to ``path`` at ``fps``; return the path.

    Args:
        path: output file; the extension picks the container (``.mp4``, ``.mkv``, ...). Its parent
            directory must exist. An existing file is overwritten.
        frames: the frames, in display order.
        fps: frames per second (> 0); non-integer rates such as 29.97 are stored as exact fractions.
        codec: ``"libx264"`` or ``"mpeg4"``; default :func:`default_codec`.
        crf: libx264 quality (0..51, lower is better; 18 is visually near-lossless). For mpeg4 a
            high fixed bit rate is used instead.
    """
    frames = check_frames(frames)
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(
            f"frames of {height}x{width} (height x width) cannot be encoded as yuv420p, which needs even sizes; "
            "pad or crop to even sizes, e.g. frames[:, : h - h % 2, : w - w % 2]."
        )
    if isinstance(fps, bool) or not isinstance(fps, Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}.")
    codec = default_codec() if codec is None else codec
    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {_CODECS}, got {codec!r}.")
    if codec not in av.codecs_available:
        raise ValueError(f"this PyAV build has no {codec!r} encoder; use codec={default_codec()!r}.")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int in 0..51, got {crf!r}.")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist; create it first.")

    if path.is_dir():
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a directory; pass a file path such as {str(path / 'video.mp4')!r}.")
    rate = Fraction(fps).limit_denominator(1001)
    try:
        _encode(path, frames, rate, codec, crf)
    except (OSError, ValueError) as exc:  # PyAV: unknown container suffix, unwritable location, full disk
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        kind = next(base for base in (FileNotFoundError, PermissionError, OSError, ValueError) if isinstance(exc, base))
        raise kind(
            f"cannot write {str(path)!r}: {detail}; use a writable location and a video suffix such as .mp4 or .mkv."
        ) from None
    return path


def _encode(path: Path, frames: np.ndarray, rate: Fraction, codec: str, crf: int) -> None:
    _, height, width, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        else:
            stream.bit_rate = max(1_000_000, int(width * height * float(rate) * 4))
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
