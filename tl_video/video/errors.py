"""Exceptions for problems with a video input.

Every error subclasses :class:`VideoError`, so a pipeline that wants to skip bad videos can catch
one type, and also a built-in type (``FileNotFoundError`` or ``ValueError``), so callers that do
not know tl_video catch them too. Messages name the file, what is wrong and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "VideoError",
    "VideoNotFoundError",
    "UnreadableVideoError",
    "TruncatedVideoError",
    "EmptyVideoError",
    "VideoTooShortError",
    "InvalidTimeRangeError",
]


class VideoError(Exception):
    """Base class of every problem with a video input."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The video path does not exist or is not a regular file."""


class UnreadableVideoError(VideoError, ValueError):
    """The file exists but cannot be decoded: corrupt, truncated, or not a video at all."""


class TruncatedVideoError(UnreadableVideoError):
    """The container promises more video than the decoder can deliver (a cut-off download)."""


class EmptyVideoError(UnreadableVideoError):
    """The file holds no video frames: zero bytes, no video stream, or a stream of length 0."""


class VideoTooShortError(VideoError, ValueError):
    """The requested window has fewer distinct frames than the caller's ``min_frames``."""


class InvalidTimeRangeError(VideoError, ValueError):
    """``start``/``end`` are not a valid window inside the video's duration."""
