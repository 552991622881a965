"""Corruptions keep shape and dtype, never touch their input, and do what their names say."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_video.video import (
    blank,
    drop_and_repeat,
    freeze,
    gaussian_noise,
    permutation_for_shuffle,
    reverse,
    shuffle,
    substitute,
    swap_spans,
)

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
T = 8


def labelled(num_frames: int = T, height: int = 4, width: int = 6) -> np.ndarray:
    """Frames whose pixels all equal the frame index, so a frame's origin is its value."""
    return np.broadcast_to(np.arange(num_frames, dtype=np.uint8)[:, None, None, None], (num_frames, height, width, 3)).copy()


def origin(frames: np.ndarray) -> list[int]:
    return [int(f[0, 0, 0]) for f in frames]


ALL = {
    "reverse": lambda f: reverse(f),
    "shuffle": lambda f: shuffle(f, seed=0),
    "freeze": lambda f: freeze(f, 3),
    "drop_and_repeat": lambda f: drop_and_repeat(f, [2, 5]),
    "swap_spans": lambda f: swap_spans(f, (0, 2), (5, 8)),
    "gaussian_noise": lambda f: gaussian_noise(f, 10.0, seed=0),
    "blank": lambda f: blank(f, [1], 0),
    "substitute": lambda f: substitute(f, 255 - f),
}


@pytest.mark.parametrize("name", ALL)
def test_shape_and_dtype_kept_input_untouched(name):
    frames = np.random.default_rng(1).integers(0, 256, (T, 4, 6, 3), dtype=np.uint8)
    before = frames.copy()
    out = ALL[name](frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(frames, before)
    assert not np.shares_memory(out, frames)
    assert not np.array_equal(out, frames)  # each corruption changes something here


def test_reverse():
    assert origin(reverse(labelled())) == [7, 6, 5, 4, 3, 2, 1, 0]
    frames = labelled()
    np.testing.assert_array_equal(reverse(reverse(frames)), frames)


@PROPERTY
@given(num_frames=st.integers(2, 16), seed=st.integers(0, 2**32 - 1))
def test_shuffle_is_a_seeded_non_identity_permutation(num_frames, seed):
    frames = labelled(num_frames)
    out = shuffle(frames, seed)
    assert sorted(origin(out)) == list(range(num_frames))  # a permutation of the frames
    assert origin(out) != list(range(num_frames))  # never the identity
    np.testing.assert_array_equal(out, shuffle(frames, seed))  # deterministic
    assert origin(out) == permutation_for_shuffle(num_frames, seed).tolist()


def test_shuffle_seeds_differ():
    orders = {tuple(origin(shuffle(labelled(), seed))) for seed in range(10)}
    assert len(orders) > 5


def test_freeze():
    assert origin(freeze(labelled(), 3)) == [3] * T


def test_drop_and_repeat_repeats_the_last_kept_frame():
    assert origin(drop_and_repeat(labelled(), [2, 3, 6])) == [0, 1, 1, 1, 4, 5, 5, 7]


def test_swap_spans():
    assert origin(swap_spans(labelled(), (0, 2), (4, 6))) == [4, 5, 2, 3, 0, 1, 6, 7]
    # unequal lengths: the frames between shift, the total stays T; order of arguments is irrelevant
    assert origin(swap_spans(labelled(), (5, 8), (0, 1))) == [5, 6, 7, 1, 2, 3, 4, 0]
    frames = labelled()
    np.testing.assert_array_equal(swap_spans(swap_spans(frames, (0, 2), (4, 6)), (0, 2), (4, 6)), frames)


def test_gaussian_noise_is_seeded_and_has_the_asked_std():
    frames = np.full((T, 32, 32, 3), 128, np.uint8)
    out = gaussian_noise(frames, 10.0, seed=3)
    np.testing.assert_array_equal(out, gaussian_noise(frames, 10.0, seed=3))
    assert not np.array_equal(out, gaussian_noise(frames, 10.0, seed=4))
    assert (out.astype(float) - 128).std() == pytest.approx(10.0, rel=0.05)
    saturated = gaussian_noise(np.full((1, 8, 8, 3), 250, np.uint8), 50.0, seed=0)
    assert saturated.max() == 255  # clipped, not wrapped around


def test_blank():
    out = blank(labelled(), [1, 4], value=(10, 20, 30))
    assert origin(out) == [0, 10, 2, 3, 10, 5, 6, 7]
    assert out[1, 0, 0].tolist() == [10, 20, 30]
    assert origin(blank(labelled(), [0], 200))[0] == 200


def test_substitute():
    other = labelled() + 100
    assert origin(substitute(labelled(), other)) == [100 + i for i in range(T)]
    assert origin(substitute(labelled(), other, [2])) == [0, 1, 102, 3, 4, 5, 6, 7]


# --- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda f: freeze(f, 8), ValueError, r"index=8 is out of range: the video has 8 frames \(valid 0..7\)"),
        (lambda f: freeze(f, -1), ValueError, "the video has 8 frames"),
        (lambda f: freeze(f, 1.0), TypeError, "must be an int frame index"),
        (lambda f: drop_and_repeat(f, [0]), ValueError, "cannot drop frame 0"),
        (lambda f: drop_and_repeat(f, [9]), ValueError, r"indices\[0\]=9 is out of range: the video has 8 frames"),
        (lambda f: drop_and_repeat(f, []), ValueError, "empty"),
        (lambda f: blank(f, [3, 8]), ValueError, r"indices\[1\]=8 is out of range"),
        (lambda f: blank(f, [1], 300), ValueError, "value must be an int 0..255"),
        (lambda f: blank(f, [1], (1, 2)), ValueError, "value must be"),
        (lambda f: swap_spans(f, (0, 3), (2, 5)), ValueError, "overlap"),
        (lambda f: swap_spans(f, (0, 3), (5, 9)), ValueError, r"inside the video's 8 frames"),
        (lambda f: swap_spans(f, (3, 3), (5, 6)), ValueError, "non-empty"),
        (lambda f: swap_spans(f, (0,), (5, 6)), TypeError, r"\(start, stop\) pair"),
        (lambda f: gaussian_noise(f, 0.0, seed=0), ValueError, "std must be a positive"),
        (lambda f: gaussian_noise(f, 1.0, seed=-1), ValueError, "seed must be a non-negative int"),
        (lambda f: shuffle(f, seed=1.5), ValueError, "seed must be a non-negative int"),
        (lambda f: substitute(f, f[:4]), ValueError, r"same shape, got frames \(8, 4, 6, 3\) and other \(4, 4, 6, 3\)"),
        (lambda f: reverse(f.astype(np.float32)), TypeError, "dtype uint8"),
        (lambda f: reverse(f[0]), ValueError, r"shape \[frames, height, width, 3\]"),
        (lambda f: reverse(f[:1]), ValueError, "at least 2 frames"),
        (lambda f: shuffle(f[:1], seed=0), ValueError, "at least 2 frames"),
    ],
)
def test_bad_arguments_raise(call, error, message):
    with pytest.raises(error, match=message):
        call(labelled())
