"""Corruptions as data: small frozen specs that name a corruption and its arguments.

A result record must say exactly which corrupted video a patching run used. Each spec is a
keyword-only frozen dataclass with a readable repr (``Shuffle(seed=0)``), applies itself to frames
(``spec(frames)``) and round-trips through JSON::

    >>> spec = corruption_from_json({"name": "shuffle", "seed": 0})
    >>> spec
    Shuffle(seed=0)
    >>> spec.to_json()
    {'name': 'shuffle', 'seed': 0}

Unknown names and fields raise, listing the valid ones. Arguments that need the frame count (an
index in range) are checked when the spec is applied, by the function in
:mod:`tl_video.video.corruptions`. New corruptions join the registry with :func:`register_corruption`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar, TypeVar

import numpy as np
from jaxtyping import UInt8

from tl_video.video import corruptions as C

__all__ = [
    "CorruptionSpec",
    "Reverse",
    "Shuffle",
    "Freeze",
    "DropAndRepeat",
    "SwapSpans",
    "GaussianNoise",
    "Blank",
    "Substitute",
    "CORRUPTIONS",
    "register_corruption",
    "corruption_from_json",
]

Frames = UInt8[np.ndarray, "frames height width 3"]
CORRUPTIONS: dict[str, type[CorruptionSpec]] = {}
"""Registry: JSON name -> spec class."""

_S = TypeVar("_S", bound="type[CorruptionSpec]")


class CorruptionSpec:
    """Base of all corruption specs: ``name`` (the JSON name), ``__call__`` and ``to_json``."""

    name: ClassVar[str]

    def __call__(self, frames: Frames) -> Frames:
        """Apply the corruption; the output has the input's shape and dtype."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """``{"name": ..., **arguments}`` with JSON types (tuples become lists)."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, tuple) else value
        return out


def register_corruption(cls: _S) -> _S:
    """Class decorator adding a spec to :data:`CORRUPTIONS` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, CorruptionSpec) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} must be a dataclass subclassing CorruptionSpec.")
    if cls.name in CORRUPTIONS and CORRUPTIONS[cls.name] is not cls:
        raise ValueError(f"a corruption named {cls.name!r} is already registered ({CORRUPTIONS[cls.name].__name__}).")
    CORRUPTIONS[cls.name] = cls
    return cls


def corruption_from_json(data: Mapping[str, Any]) -> CorruptionSpec:
    """Build a spec from ``{"name": ..., **arguments}``; unknown names or fields raise with the valid ones."""
    if not isinstance(data, Mapping) or "name" not in data:
        raise ValueError(
            f"a corruption must be a JSON object with a 'name' (one of {sorted(CORRUPTIONS)}), got {data!r}."
        )
    name = data["name"]
    if name not in CORRUPTIONS:
        close = difflib.get_close_matches(str(name), CORRUPTIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown corruption {name!r}; valid names: {sorted(CORRUPTIONS)}.{hint}")
    cls = CORRUPTIONS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    arguments = {k: v for k, v in data.items() if k != "name"}
    unknown = sorted(set(arguments) - set(fields))
    if unknown:
        raise ValueError(f"corruption {name!r} has no field(s) {unknown}; valid fields: {sorted(fields) or 'none'}.")
    missing = sorted(
        f.name
        for f in fields.values()
        if f.name not in arguments and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"corruption {name!r} needs field(s) {missing}; got {sorted(arguments)}.")
    return cls(**arguments)


def _int(spec: str, field: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{spec}.{field} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _int_tuple(spec: str, field: str, value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{spec}.{field} must be a list of frame indices, got {value!r}.")
    items = tuple(_int(spec, f"{field}[{i}]", v) for i, v in enumerate(value))
    if not items:
        raise ValueError(f"{spec}.{field} is empty; name at least one frame.")
    return items


@register_corruption
@dataclass(frozen=True, kw_only=True)
class Reverse(CorruptionSpec):
    """Frames in reverse order (:func:`tl_video.video.corruptions.reverse`)."""

    name: ClassVar[str] = "reverse"

    def __call__(self, frames: Frames) -> Frames:
        return C.reverse(frames)


@register_corruption
@dataclass(frozen=True, kw_only=True)
class Shuffle(CorruptionSpec):
    """Seeded random frame order, never the identity (:func:`tl_video.video.corruptions.shuffle`)."""

    name: ClassVar[str] = "shuffle"
    seed: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", _int("Shuffle", "seed", self.seed))

    def __call__(self, frames: Frames) -> Frames:
        return C.shuffle(frames, self.seed)


@register_corruption
@dataclass(frozen=True, kw_only=True)
class Freeze(CorruptionSpec):
    """Frame ``index`` repeated T times (:func:`tl_video.video.corruptions.freeze`)."""

    name: ClassVar[str] = "freeze"
    index: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _int("Freeze", "index", self.index))

    def __call__(self, frames: Frames) -> Frames:
        return C.freeze(frames, self.index)


@register_corruption
@dataclass(frozen=True, kw_only=True)
class DropAndRepeat(CorruptionSpec):
    """Frames at ``indices`` replaced by the previous kept frame (:func:`tl_video.video.corruptions.drop_and_repeat`)."""

    name: ClassVar[str] = "drop_and_repeat"
    indices: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", _int_tuple("DropAndRepeat", "indices", self.indices))

    def __call__(self, frames: Frames) -> Frames:
        return C.drop_and_repeat(frames, self.indices)


@register_corruption
@dataclass(frozen=True, kw_only=True)
class SwapSpans(CorruptionSpec):
    """Half-open frame spans ``a`` and ``b`` exchanged (:func:`tl_video.video.corruptions.swap_spans`)."""

    name: ClassVar[str] = "swap_spans"
    a: tuple[int, int]
    b: tuple[int, int]

    def __post_init__(self) -> None:
        for field in ("a", "b"):
            span = _int_tuple("SwapSpans", field, getattr(self, field))
            if len(span) != 2:
                raise ValueError(f"SwapSpans.{field} must be a [start, stop] pair, got {list(span)}.")
            object.__setattr__(self, field, span)

    def __call__(self, frames: Frames) -> Frames:
        return C.swap_spans(frames, self.a, self.b)


@register_corruption
@dataclass(frozen=True, kw_only=True)
class GaussianNoise(CorruptionSpec):
    """Seeded Gaussian pixel noise of ``std`` levels (:func:`tl_video.video.corruptions.gaussian_noise`)."""

    name: ClassVar[str] = "gaussian_noise"
    std: float
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.std, bool) or not isinstance(self.std, Real) or not math.isfinite(self.std) or self.std <= 0:
            raise ValueError(f"GaussianNoise.std must be a positive number of pixel levels, got {self.std!r}.")
        object.__setattr__(self, "std", float(self.std))
        object.__setattr__(self, "seed", _int("GaussianNoise", "seed", self.seed))

    def __call__(self, frames: Frames) -> Frames:
        return C.gaussian_noise(frames, self.std, self.seed)


@register_corruption
@dataclass(frozen=True, kw_only=True)
class Blank(CorruptionSpec):
    """Frames at ``indices`` set to a constant grey level or RGB triple (:func:`tl_video.video.corruptions.blank`)."""

    name: ClassVar[str] = "blank"
    indices: tuple[int, ...]
    value: int | tuple[int, int, int] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", _int_tuple("Blank", "indices", self.indices))
        value = _int("Blank", "value", self.value) if isinstance(self.value, Integral) else _int_tuple("Blank", "value", self.value)
        levels = (value,) if isinstance(value, int) else value
        if len(levels) not in (1, 3) or max(levels) > 255:
            raise ValueError(f"Blank.value must be a grey level 0..255 or an [r, g, b] triple of them, got {self.value!r}.")
        object.__setattr__(self, "value", value)

    def __call__(self, frames: Frames) -> Frames:
        return C.blank(frames, self.indices, self.value)


@register_corruption
@dataclass(frozen=True, kw_only=True)
class Substitute(CorruptionSpec):
    """All frames replaced by T frames of another video file (:func:`tl_video.video.corruptions.substitute`).

    The other video is read with ``read_video(video, num_frames=T, start=start, end=end)``; its
    frames must have the same height and width as the clean frames.
    """

    name: ClassVar[str] = "substitute"
    video: str
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.video, str) or not self.video:
            raise ValueError(f"Substitute.video must be a non-empty path string, got {self.video!r}.")

    def __call__(self, frames: Frames) -> Frames:
        from tl_video.video.decode import read_video  # decode pulls in decord; only needed here

        other = read_video(self.video, num_frames=len(frames), start=self.start, end=self.end).frames
        return C.substitute(frames, other)
