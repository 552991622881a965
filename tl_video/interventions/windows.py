"""Layer windows for knockout sweeps (METHODS.md, "Attention knockout"). Layers are 0-indexed."""

from __future__ import annotations

from typing import Iterable, Literal

WindowStyle = Literal["center", "inverse", "top_down", "bottom_up"]
WINDOW_STYLES: tuple[str, ...] = ("center", "inverse", "top_down", "bottom_up")


def checked_layers(layers: Iterable[int] | None, n_layers: int, what: str = "layers") -> list[int]:
    """`layers` as a list (None = every layer), refusing any outside 0..n_layers-1."""
    layers = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"{what}: layers {bad} are out of range for a model with {n_layers} layers (0..{n_layers - 1})")
    return layers


def window_layers(center: int, n_layers: int, k: int = 9, style: WindowStyle = "center") -> tuple[int, ...]:
    """The layers blocked for a sweep step at `center`.

    center: [max(0, l - k//2), min(n, l + k - k//2)); inverse: every layer outside it;
    top_down: [l, n); bottom_up: [0, l].
    """
    if not 0 <= center < n_layers:
        raise ValueError(f"window centre layer {center} is out of range for {n_layers} layers (0..{n_layers - 1})")
    if not 1 <= k <= n_layers:
        raise ValueError(f"window size k={k} must be between 1 and the number of layers ({n_layers})")
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
