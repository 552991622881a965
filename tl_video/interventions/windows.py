"""Layer numbers and layer windows for knockout sweeps (docs/methods.md, "Attention knockout").

Layers are 0-indexed integers. A layer number that is not an integer (1.7, "1", True) is an
error, never truncated or coerced.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Iterable, Literal

import numpy as np

WindowStyle = Literal["center", "inverse", "top_down", "bottom_up"]
WINDOW_STYLES: tuple[str, ...] = ("center", "inverse", "top_down", "bottom_up")


def integer(value: Any, what: str) -> int:
    """`value` as a Python int; floats, strings and booleans raise (`what` names the input)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} must be an integer, got the boolean {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r} ({type(value).__name__})") from None


def layer_numbers(layers: Iterable[int], what: str = "layers") -> tuple[int, ...]:
    """Validate an iterable of integer layer numbers (no range check: the model is not known yet)."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise ValueError(f"{what}: layers must be a list of integers, got {layers!r}; e.g. [{layers!r}] or range(2, 6)")
    return tuple(integer(layer, f"{what}: layer number") for layer in layers)


def checked_layers(layers: Iterable[int] | None, n_layers: int, what: str = "layers") -> list[int]:
    """`layers` as a list (None = every layer), refusing non-integers and any outside 0..n_layers-1."""
    n_layers = integer(n_layers, "number of layers")
    layers = list(range(n_layers)) if layers is None else list(layer_numbers(layers, what))
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"{what}: layers {bad} are out of range for a model with {n_layers} layers (0..{n_layers - 1})")
    return layers


def window_layers(
    center: int, n_layers: int, k: int = 9, style: WindowStyle = "center", clip: bool = False
) -> tuple[int, ...]:
    """The layers blocked for a sweep step at `center`.

    center: [max(0, l - k//2), min(n, l + k - k//2)); inverse: every layer outside it;
    top_down: [l, n); bottom_up: [0, l]. A window larger than the model (k > n_layers) is an
    error unless `clip=True`, which keeps the formula (clipped to the model's layers) and warns.
    """
    center = integer(center, "window centre layer")
    n_layers = integer(n_layers, "number of layers")
    k = integer(k, "window size k")
    if n_layers < 1:
        raise ValueError(f"number of layers must be >= 1, got {n_layers}")
    if not 0 <= center < n_layers:
        raise ValueError(f"window centre layer {center} is out of range for {n_layers} layers (0..{n_layers - 1})")
    if k < 1:
        raise ValueError(f"window size k={k} must be >= 1")
    if k > n_layers:
        if not clip:
            raise ValueError(
                f"window size k={k} must be between 1 and the number of layers ({n_layers}); "
                "pass clip=True to clip the window to the model's layers"
            )
        warnings.warn(f"window size k={k} is larger than the model's {n_layers} layers; the window is clipped to them", stacklevel=2)
    if style not in WINDOW_STYLES:
        raise ValueError(f"unknown window style {style!r}; valid: {', '.join(WINDOW_STYLES)}")
    window = range(max(0, center - k // 2), min(n_layers, center + k - k // 2))
    if style == "center":
        return tuple(window)
    if style == "inverse":
        return tuple(layer for layer in range(n_layers) if layer not in window)
    if style == "top_down":
        return tuple(range(center, n_layers))
    return tuple(range(0, center + 1))
