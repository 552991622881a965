"""read_video on real mp4/mkv files written with PyAV: sampling, windows, file objects and every bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tl_video.video import (
    EmptyVideoError,
    InvalidTimeRangeError,
    TruncatedVideoError,
    UnreadableVideoError,
    VideoError,
    VideoNotFoundError,
    VideoTooShortError,
    read_video,
    segment_midpoint_indices,
    write_video,
)


def test_reads_eight_midpoint_frames_by_default(indexed):
    path = indexed.write(num_frames=16, fps=8.0)
    video = read_video(path)

    assert video.frames.shape == (8, 32, 32, 3) and video.frames.dtype == np.uint8
    assert video.frame_indices.tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert indexed.ids(video.frames) == video.frame_indices.tolist()  # the decoded pixels are those frames
    np.testing.assert_allclose(video.timestamps, video.frame_indices / 8.0)
    assert (video.source_fps, video.source_frame_count, video.duration) == (8.0, 16, 2.0)
    assert (video.start, video.end, video.path) == (0.0, 2.0, str(path))
    assert video.num_distinct_frames == 8
    assert "frame_indices=[1, 3, 5" in repr(video)


def test_window_and_num_frames(indexed):
    path = indexed.write(num_frames=24, fps=8.0)
    video = read_video(path, num_frames=4, start=1.0, end=2.0)
    expected = segment_midpoint_indices(24, 8.0, 4, 1.0, 2.0).tolist()
    assert video.frame_indices.tolist() == expected == [9, 11, 13, 15]  # frames 8..15, two per segment
    assert indexed.ids(video.frames) == expected


def test_fps_sampling_takes_frames_at_that_rate(indexed):
    path = indexed.write(num_frames=16, fps=8.0)
    video = read_video(path, fps=2.0)  # 2 s at 2 fps: 4 frames, one per half second
    assert video.frame_indices.tolist() == [2, 6, 10, 14]
    assert indexed.ids(video.frames) == [2, 6, 10, 14]


def test_mvbench_sampling(indexed):
    path = indexed.write(num_frames=16, fps=8.0)
    video = read_video(path, num_frames=8, sampling="mvbench")
    assert video.frame_indices.tolist() == [0, 2, 4, 6, 8, 9, 11, 13]
    assert indexed.ids(video.frames) == video.frame_indices.tolist()


def test_short_video_repeats_frames_unless_min_frames_forbids(indexed):
    path = indexed.write(num_frames=4, fps=8.0)
    video = read_video(path, num_frames=8)
    assert video.frame_indices.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert video.num_distinct_frames == 4
    with pytest.raises(VideoTooShortError, match=r"4 distinct frame\(s\).*min_frames=8"):
        read_video(path, num_frames=8, min_frames=8)


@pytest.mark.parametrize("named", [True, False])
def test_reads_from_file_objects(indexed, named):
    path = indexed.write(num_frames=16, fps=8.0)
    if named:
        with open(path, "rb") as f:
            video = read_video(f, num_frames=4)
        assert video.path == str(path)
    else:
        video = read_video(io.BytesIO(path.read_bytes()), num_frames=4)
        assert video.path is None
    assert indexed.ids(video.frames) == [2, 6, 10, 14]


def test_reads_mkv(indexed):
    path = indexed.write(num_frames=16, fps=8.0, name="indexed.mkv")
    assert indexed.ids(read_video(path).frames) == [1, 3, 5, 7, 9, 11, 13, 15]


@pytest.mark.parametrize("width", [16, 24, 48, 72])
def test_widths_where_decord_batch_reads_fail_still_decode(indexed, width):
    # decord's get_batch fails for these widths; read_video falls back to decoding with PyAV
    path = indexed.write(num_frames=16, width=width, name=f"w{width}.mp4")
    video = read_video(path, num_frames=5)
    assert video.frames.shape == (5, 32, width, 3)
    assert indexed.ids(video.frames) == video.frame_indices.tolist() == [1, 4, 8, 11, 14]


# --- bad input -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoNotFoundError, match="video file not found.*nope.mp4") as info:
        read_video(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, VideoError)


def test_directory_is_not_a_video(tmp_path):
    with pytest.raises(VideoNotFoundError, match="not a regular file"):
        read_video(tmp_path)


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(EmptyVideoError, match="empty.mp4.*0 bytes"):
        read_video(empty)


def test_empty_file_object():
    with pytest.raises(EmptyVideoError, match="0 bytes read"):
        read_video(io.BytesIO(b""))


def test_video_without_frames(zero_frame_mp4):
    with pytest.raises(EmptyVideoError, match="zero_frames.mp4.*no video stream"):
        read_video(zero_frame_mp4)


def test_audio_only_file(audio_only_mp4):
    with pytest.raises(EmptyVideoError, match=r"no video stream \(streams found: audio\)"):
        read_video(audio_only_mp4)


def test_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 50)
    with pytest.raises(UnreadableVideoError, match="notes.mp4.*corrupt, truncated.*Re-download") as info:
        read_video(text)
    assert isinstance(info.value, ValueError)


def test_mp4_cut_in_half(indexed):
    path = indexed.cut_in_half(indexed.write(num_frames=16), "half.mp4")
    with pytest.raises(UnreadableVideoError, match="half.mp4"):
        read_video(path)


def test_mp4_with_index_first_cut_short(indexed, tmp_path):
    # with the index (moov) at the front the container opens; the frame data is missing
    import av

    path = tmp_path / "faststart.mp4"
    frames = indexed.frames(16)
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    cut = tmp_path / "faststart_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(UnreadableVideoError, match="faststart_cut.mp4"):
        read_video(cut)


def test_mkv_cut_in_half_is_detected_as_truncated(tmp_path, indexed):
    # decord decodes the surviving frames of a cut-off mkv without complaint (here about half of
    # them); the duration the container declares in its header exposes the cut
    noise = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)  # equal-sized frames
    full = write_video(tmp_path / "full.mkv", noise, 8.0)
    path = indexed.cut_in_half(full, "half.mkv")
    with pytest.raises(TruncatedVideoError, match=r"half.mkv: the container declares 3.000 s of video but only"):
        read_video(path)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"start": 1.5, "end": 1.0}, "start=1.5 s is not before end=1.0 s"),
        ({"start": 1.0, "end": 1.0}, "not before end"),
        ({"start": -0.5}, "start=-0.5 s is negative"),
        ({"start": 2.0}, r"not before the end of the video \(2.000 s\)"),
        ({"end": 3.0}, r"end=3.0 s is past the end of the video \(2.000 s, 16 frames at 8 fps\)"),
    ],
)
def test_windows_outside_the_video(indexed, window, message):
    path = indexed.write(num_frames=16, fps=8.0)
    with pytest.raises(InvalidTimeRangeError, match=message) as info:
        read_video(path, **window)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 8, "fps": 2.0}, "either num_frames"),
        ({"num_frames": 0}, "num_frames must be an int >= 1"),
        ({"min_frames": 0}, "min_frames must be an int >= 1"),
        ({"sampling": "uniform"}, "sampling must be"),
        ({"sampling": "mvbench", "fps": 2.0}, "pass num_frames instead of fps"),
    ],
)
def test_invalid_arguments(indexed, kwargs, message):
    path = indexed.write(num_frames=16)
    with pytest.raises(ValueError, match=message):
        read_video(path, **kwargs)


def test_bytes_are_not_a_path():
    with pytest.raises(TypeError, match=r"io.BytesIO"):
        read_video(b"\x00\x00")  # type: ignore[arg-type]


def test_decoded_colours_are_close_to_written(tmp_path):
    frames = np.zeros((4, 32, 48, 3), np.uint8)
    frames[..., 0] = 200
    frames[:, :, 24:, 2] = 180
    path = write_video(tmp_path / "colours.mp4", frames, 4.0)
    decoded = read_video(path, num_frames=4).frames
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 4
