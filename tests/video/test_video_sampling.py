"""Frame samplers: property tests over random videos and windows, plus the paper's worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tl_video.video import (
    InvalidTimeRangeError,
    mvbench_segment_indices,
    num_frames_at_fps,
    resolve_window,
    segment_midpoint_indices,
)

# The root conftest's autouse fixture only seeds torch; it does not interact with hypothesis examples.
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EPS = 1e-9


@st.composite
def videos_and_windows(draw):
    """(frame_count, fps, T, start, end) with a valid window, or None ends for the whole video."""
    frame_count = draw(st.integers(1, 20_000))
    fps = draw(st.sampled_from([1.0, 7.5, 8.0, 23.976, 24.0, 25.0, 29.97, 30.0, 60.0]) | st.floats(0.5, 240.0))
    num_frames = draw(st.integers(1, 64))
    duration = frame_count / fps
    if draw(st.booleans()):
        return frame_count, fps, num_frames, None, None
    a, b = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2)))
    assume(b - a > 1e-6)
    return frame_count, fps, num_frames, a * duration, b * duration


@PROPERTY
@given(videos_and_windows())
def test_midpoint_indices_are_in_range_sorted_and_inside_the_window(case):
    frame_count, fps, num_frames, start, end = case
    indices = segment_midpoint_indices(frame_count, fps, num_frames, start, end)
    lo = 0.0 if start is None else start
    hi = frame_count / fps if end is None else end

    assert indices.dtype == np.int64 and indices.shape == (num_frames,)
    assert indices.min() >= 0 and indices.max() < frame_count
    assert np.all(np.diff(indices) >= 0)
    # every sampled frame is on screen during the window: [i/fps, (i+1)/fps) overlaps [lo, hi]
    assert np.all(indices / fps <= hi + EPS)
    assert np.all((indices + 1) / fps >= lo - EPS)
    # ... and is the frame on screen at its segment's midpoint
    midpoints = lo + (np.arange(num_frames) + 0.5) * (hi - lo) / num_frames
    assert np.all(indices / fps <= midpoints + 1e-6)
    assert np.all(midpoints < (indices + 1) / fps + 1e-6)


@PROPERTY
@given(videos_and_windows())
def test_midpoint_indices_are_distinct_when_the_window_has_enough_frames(case):
    frame_count, fps, num_frames, start, end = case
    lo = 0.0 if start is None else start
    hi = frame_count / fps if end is None else end
    assume((hi - lo) * fps / num_frames >= 1 + 1e-6)  # each segment spans more than one frame period
    indices = segment_midpoint_indices(frame_count, fps, num_frames, start, end)
    assert np.unique(indices).size == num_frames


def _reference_get_index(bound, fps, max_frame, num_segments):
    """MVBench/TVBench's `get_index` as published (first_idx=0), for comparison."""
    if bound:
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    start_idx = max(0, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    return np.array([int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_segments)])


@PROPERTY
@given(videos_and_windows())
def test_mvbench_indices_match_the_reference_loader(case):
    frame_count, fps, num_frames, start, end = case
    bound = None if start is None else (start, end)
    assume(start is None or round(start * fps) <= frame_count - 1)  # where the reference stays in range
    ours = mvbench_segment_indices(frame_count, fps, num_frames, start, end)
    np.testing.assert_array_equal(ours, _reference_get_index(bound, fps, frame_count - 1, num_frames))


@PROPERTY
@given(videos_and_windows())
def test_mvbench_indices_are_in_range_and_sorted(case):
    frame_count, fps, num_frames, start, end = case
    indices = mvbench_segment_indices(frame_count, fps, num_frames, start, end)
    assert indices.min() >= 0 and indices.max() < frame_count
    assert np.all(np.diff(indices) >= 0)


def test_eight_of_sixteen_frames_are_the_odd_ones():
    # 16 frames at 8 fps, T = 8: segment k spans frames 2k..2k+1, its midpoint is the start of frame 2k+1
    assert segment_midpoint_indices(16, 8.0, 8).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]


def test_a_window_samples_only_its_own_frames():
    # [1 s, 2 s] of a 10 fps video holds frames 10..19
    assert segment_midpoint_indices(100, 10.0, 5, 1.0, 2.0).tolist() == [11, 13, 15, 17, 19]


def test_short_video_repeats_frames():
    assert segment_midpoint_indices(3, 3.0, 6).tolist() == [0, 0, 1, 1, 2, 2]


def test_end_may_overrun_by_one_frame_period_and_is_clamped():
    assert resolve_window(0.0, 2.1, duration=2.0, fps=10.0) == (0.0, 2.0)
    with pytest.raises(InvalidTimeRangeError, match="past the end of the video"):
        resolve_window(0.0, 2.2, duration=2.0, fps=10.0)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (1.0, 1.0, "not before end"),
        (1.5, 1.0, "not before end"),
        (-0.5, None, "negative"),
        (2.0, None, "not before the end of the video"),
        (None, 5.0, "past the end"),
        (math.nan, None, "not a finite number"),
        ("1", None, "not a finite number"),
    ],
)
def test_invalid_windows_raise(start, end, message):
    with pytest.raises(InvalidTimeRangeError, match=message):
        segment_midpoint_indices(16, 8.0, 8, start, end)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"frame_count": 0}, ValueError, "frame_count must be at least 1"),
        ({"num_frames": 0}, ValueError, "num_frames must be at least 1"),
        ({"num_frames": 2.5}, TypeError, "num_frames must be an int"),
        ({"num_frames": True}, TypeError, "num_frames must be an int"),
        ({"fps": 0.0}, ValueError, "fps must be a positive"),
        ({"fps": math.inf}, ValueError, "fps must be a positive"),
    ],
)
def test_invalid_sampler_arguments_raise(kwargs, error, message):
    arguments = {"frame_count": 16, "fps": 8.0, "num_frames": 8} | kwargs
    for sampler in (segment_midpoint_indices, mvbench_segment_indices):
        with pytest.raises(error, match=message):
            sampler(**arguments)


def test_num_frames_at_fps():
    assert num_frames_at_fps(0.0, 2.0, 4.0) == 8
    assert num_frames_at_fps(0.0, 0.1, 1.0) == 1
    with pytest.raises(ValueError, match="sample fps"):
        num_frames_at_fps(0.0, 1.0, -1.0)
