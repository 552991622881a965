"""Validation of frame stacks, shared by the writer and the corruptions.

A frame stack is what :func:`tl_video.video.read_video` returns and what the front ends consume:
a ``uint8`` array ``[frames, height, width, 3]`` of RGB pixels. Checking it once here keeps every
caller's error message identical and names the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from jaxtyping import UInt8

__all__ = ["check_frames"]


def check_frames(frames: Any, *, name: str = "frames") -> UInt8[np.ndarray, "frames height width 3"]:
    """Return ``frames`` unchanged if it is a non-empty ``uint8 [T, H, W, 3]`` array, else raise.

    Raises:
        TypeError: ``frames`` is not a numpy array, or its dtype is not ``uint8``.
        ValueError: wrong number of dimensions, not 3 channels, or an empty axis.
    """
    if not isinstance(frames, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy uint8 array [frames, height, width, 3], got {type(frames).__name__}; "
            "convert with np.asarray(...) (torch tensors: .cpu().numpy())."
        )
    if frames.dtype != np.uint8:
        raise TypeError(
            f"{name} must have dtype uint8 (RGB 0..255), got {frames.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8) if the values are pixel intensities."
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape [frames, height, width, 3] (RGB), got {tuple(frames.shape)}; "
            "add a frame axis with x[None] for a single image."
        )
    if 0 in frames.shape:
        raise ValueError(f"{name} has an empty axis: shape {tuple(frames.shape)}.")
    return frames
