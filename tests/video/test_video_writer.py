"""write_video: real files that decode back to the frames written, and clear errors for bad frames."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tl_video.video import read_video, write_video


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_round_trip(indexed, tmp_path, codec, suffix):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec}")
    frames = indexed.frames(12, height=32, width=64)
    path = write_video(tmp_path / f"clip{suffix}", frames, 6.0, codec=codec)
    video = read_video(path, num_frames=12)
    assert video.source_frame_count == 12 and video.source_fps == pytest.approx(6.0)
    assert indexed.ids(video.frames) == list(range(12))
    assert np.abs(video.frames.astype(int) - frames).max() <= 6


def test_non_integer_frame_rate(tmp_path, indexed):
    path = write_video(tmp_path / "ntsc.mp4", indexed.frames(10), 29.97)
    video = read_video(path, num_frames=10)
    assert video.source_fps == pytest.approx(29.97, abs=1e-3)
    assert video.duration == pytest.approx(10 / 29.97, abs=1e-3)


def test_saturated_colours_survive(tmp_path):
    colours = np.array([[230, 25, 25], [25, 200, 25], [30, 60, 230], [240, 220, 20]], np.uint8)
    frames = np.repeat(colours[:, None, None, :], 32 * 32, axis=1).reshape(4, 32, 32, 3)
    decoded = read_video(write_video(tmp_path / "c.mp4", frames, 4.0), num_frames=4).frames
    assert np.abs(decoded.astype(int) - frames).max() <= 10


@pytest.mark.parametrize(
    ("frames", "error", "message"),
    [
        (np.zeros((2, 31, 32, 3), np.uint8), ValueError, r"31x32 .*even sizes"),
        (np.zeros((2, 32, 33, 3), np.uint8), ValueError, r"32x33 .*even sizes"),
        (np.zeros((2, 32, 32, 3), np.float32), TypeError, "dtype uint8"),
        (np.zeros((32, 32, 3), np.uint8), ValueError, r"shape \[frames, height, width, 3\]"),
        (np.zeros((2, 32, 32, 4), np.uint8), ValueError, r"shape \[frames, height, width, 3\]"),
        (np.zeros((0, 32, 32, 3), np.uint8), ValueError, "empty axis"),
        ([[[[0, 0, 0]]]], TypeError, "numpy uint8 array"),
    ],
)
def test_bad_frames(tmp_path, frames, error, message):
    with pytest.raises(error, match=message):
        write_video(tmp_path / "bad.mp4", frames, 8.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fps": 0}, "fps must be a positive"),
        ({"fps": float("nan")}, "fps must be a positive"),
        ({"codec": "vp9"}, "codec must be one of"),
        ({"crf": 60}, "crf must be an int in 0..51"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    arguments = {"fps": 8.0} | kwargs
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "bad.mp4", np.zeros((2, 32, 32, 3), np.uint8), **arguments)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        write_video(tmp_path / "no" / "such" / "dir.mp4", np.zeros((2, 32, 32, 3), np.uint8), 8.0)
