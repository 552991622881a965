"""Corruption specs: JSON round trip, readable repr, registry errors, and equality with the functions."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tl_video.video import (
    CORRUPTIONS,
    Blank,
    CorruptionSpec,
    DropAndRepeat,
    Freeze,
    GaussianNoise,
    Reverse,
    Shuffle,
    Substitute,
    SwapSpans,
    corruption_from_json,
    drop_and_repeat,
    register_corruption,
    reverse,
    shuffle,
    swap_spans,
    write_video,
)

SPECS = [
    Reverse(),
    Shuffle(seed=3),
    Freeze(index=2),
    DropAndRepeat(indices=(1, 4)),
    SwapSpans(a=(0, 2), b=(5, 7)),
    GaussianNoise(std=5.0, seed=1),
    Blank(indices=(0, 3), value=(255, 0, 0)),
    Blank(indices=(2,)),
    Substitute(video="other.mp4", start=0.5, end=1.5),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_json_round_trip(spec):
    data = json.loads(json.dumps(spec.to_json()))
    assert data["name"] == spec.name
    assert corruption_from_json(data) == spec


def test_registry_holds_every_builtin():
    assert set(CORRUPTIONS) == {
        "reverse", "shuffle", "freeze", "drop_and_repeat", "swap_spans", "gaussian_noise", "blank", "substitute",
    }


def test_readable_repr_and_json():
    assert repr(Shuffle(seed=0)) == "Shuffle(seed=0)"
    assert repr(SwapSpans(a=[0, 2], b=[4, 6])) == "SwapSpans(a=(0, 2), b=(4, 6))"
    assert SwapSpans(a=[0, 2], b=[4, 6]).to_json() == {"name": "swap_spans", "a": [0, 2], "b": [4, 6]}
    assert corruption_from_json({"name": "reverse"}).to_json() == {"name": "reverse"}


def test_specs_are_frozen_and_hashable():
    spec = DropAndRepeat(indices=[1, 2])
    assert spec.indices == (1, 2) and hash(spec) == hash(DropAndRepeat(indices=(1, 2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.indices = (3,)  # type: ignore[misc]


def test_specs_apply_their_function():
    frames = np.random.default_rng(0).integers(0, 256, (8, 4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Reverse()(frames), reverse(frames))
    np.testing.assert_array_equal(Shuffle(seed=3)(frames), shuffle(frames, 3))
    np.testing.assert_array_equal(DropAndRepeat(indices=(1, 4))(frames), drop_and_repeat(frames, (1, 4)))
    np.testing.assert_array_equal(SwapSpans(a=(0, 2), b=(5, 7))(frames), swap_spans(frames, (0, 2), (5, 7)))


def test_substitute_reads_the_other_video(tmp_path):
    other = np.full((4, 16, 16, 3), 200, np.uint8)
    path = write_video(tmp_path / "other.mp4", other, 4.0)
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    out = Substitute(video=str(path))(frames)
    assert out.shape == frames.shape and abs(float(out.mean()) - 200) < 3
    with pytest.raises(ValueError, match=r"same shape.*\(4, 8, 8, 3\).*\(4, 16, 16, 3\)"):
        Substitute(video=str(path))(np.zeros((4, 8, 8, 3), np.uint8))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "shufle", "seed": 0}, r"unknown corruption 'shufle'; valid names: \['blank', .*'swap_spans'\]. Did you mean 'shuffle'\?"),
        ({"name": "shuffle", "seed": 0, "sead": 1}, r"no field\(s\) \['sead'\]; valid fields: \['seed'\]"),
        ({"name": "shuffle"}, r"needs field\(s\) \['seed'\]"),
        ({"seed": 0}, "must be a JSON object with a 'name'"),
        ("reverse", "must be a JSON object with a 'name'"),
        ({"name": "freeze", "index": -1}, "Freeze.index must be an int >= 0"),
        ({"name": "gaussian_noise", "std": 0}, "GaussianNoise.std must be a positive"),
        ({"name": "swap_spans", "a": [0, 1, 2], "b": [3, 4]}, r"SwapSpans.a must be a \[start, stop\] pair"),
        ({"name": "drop_and_repeat", "indices": []}, "DropAndRepeat.indices is empty"),
        ({"name": "drop_and_repeat", "indices": "12"}, "must be a list of frame indices"),
        ({"name": "blank", "indices": [0], "value": [1, 2]}, "Blank.value must be a grey level"),
        ({"name": "substitute", "video": ""}, "Substitute.video must be a non-empty path"),
    ],
)
def test_bad_specs_raise(data, message):
    with pytest.raises(ValueError, match=message):
        corruption_from_json(data)


def test_index_range_is_checked_when_applied():
    with pytest.raises(ValueError, match="the video has 4 frames"):
        Freeze(index=9)(np.zeros((4, 2, 2, 3), np.uint8))


def test_register_a_new_corruption():
    @register_corruption
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Invert(CorruptionSpec):
        name = "test_invert"

        def __call__(self, frames):
            return 255 - frames

    try:
        assert corruption_from_json({"name": "test_invert"}) == Invert()
        with pytest.raises(ValueError, match="already registered"):

            @register_corruption
            @dataclasses.dataclass(frozen=True, kw_only=True)
            class Other(CorruptionSpec):
                name = "test_invert"

    finally:
        CORRUPTIONS.pop("test_invert", None)
    with pytest.raises(TypeError, match="dataclass subclassing CorruptionSpec"):
        register_corruption(int)  # type: ignore[arg-type]
