"""Numpy drawing primitives for the synthetic benchmark: a palette, filled shapes, textured scenes.

Everything is chosen to survive lossy yuv420p H.264 compression and be recoverable from decoded
frames: large solid shapes, saturated colours far apart in RGB, textures with periods of several
pixels on a dark background. A shape of "radius" r fits in a ``2r x 2r`` box around its centre.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import UInt8

__all__ = ["PALETTE", "SHAPES", "SCENES", "BACKGROUND", "blank_canvas", "shape_mask", "draw_shape", "render_scene"]

BACKGROUND = (32, 32, 32)
"""Dark grey background of shape videos."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 200, 25),
    "blue": (30, 60, 230),
    "yellow": (240, 220, 20),
    "magenta": (220, 30, 220),
    "cyan": (20, 210, 220),
    "orange": (250, 130, 0),
    "white": (245, 245, 245),
}
"""Colour name -> RGB; saturated and pairwise far apart, so they are told apart after compression."""

SHAPES = ("square", "circle", "triangle")

SCENES: dict[str, tuple[tuple[int, int, int], str]] = {
    "red vertical stripes": ((220, 40, 40), "vertical_stripes"),
    "blue checkerboard": ((40, 70, 220), "checkerboard"),
    "green horizontal stripes": ((40, 190, 40), "horizontal_stripes"),
    "yellow dots": ((230, 210, 30), "dots"),
    "cyan diagonal stripes": ((30, 200, 210), "diagonal_stripes"),
}
"""Scene name -> (base colour, texture). A scene alternates its colour with a half-brightness shade."""


def blank_canvas(size: int, colour: tuple[int, int, int] = BACKGROUND) -> UInt8[np.ndarray, "height width 3"]:
    """A ``size x size`` RGB image filled with ``colour``."""
    return np.broadcast_to(np.asarray(colour, dtype=np.uint8), (size, size, 3)).copy()


def shape_mask(size: int, shape: str, center: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean ``[size, size]`` mask of a filled shape; ``center`` is (row, col) in pixels.

    square: the ``2r x 2r`` box; circle: the disc of radius r; triangle: apex up, base ``2r`` wide.
    """
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cy, cx = center
    dy, dx = rows - cy, cols - cx
    if shape == "square":
        return (np.abs(dy) <= radius) & (np.abs(dx) <= radius)
    if shape == "circle":
        return dy**2 + dx**2 <= radius**2
    if shape == "triangle":
        depth = dy + radius  # 0 at the apex, 2r at the base
        return (depth >= 0) & (depth <= 2 * radius) & (np.abs(dx) <= depth / 2)
    raise ValueError(f"unknown shape {shape!r}; valid shapes: {SHAPES}.")


def draw_shape(
    image: UInt8[np.ndarray, "height width 3"],
    shape: str,
    center: tuple[float, float],
    radius: float,
    colour: tuple[int, int, int],
) -> None:
    """Paint a filled shape onto ``image`` in place."""
    image[shape_mask(image.shape[0], shape, center, radius)] = colour


def render_scene(name: str, size: int) -> UInt8[np.ndarray, "height width 3"]:
    """A ``size x size`` textured background for scene ``name`` (see :data:`SCENES`)."""
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; valid scenes: {sorted(SCENES)}.")
    colour, texture = SCENES[name]
    period = max(4, size // 8)
    rows, cols = np.mgrid[0:size, 0:size]
    if texture == "vertical_stripes":
        on = (cols // period) % 2 == 0
    elif texture == "horizontal_stripes":
        on = (rows // period) % 2 == 0
    elif texture == "checkerboard":
        on = ((rows // period) + (cols // period)) % 2 == 0
    elif texture == "diagonal_stripes":
        on = ((rows + cols) // period) % 2 == 0
    else:  # dots
        centre = period / 2
        on = ((rows % period) - centre + 0.5) ** 2 + ((cols % period) - centre + 0.5) ** 2 <= (period / 3) ** 2
    base = np.asarray(colour, dtype=np.uint8)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[on] = base
    image[~on] = base // 2
    return image
