"""Writing a video where it cannot go: one line naming the path and the fix, never a bare PyAV error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tl_video.video import read_video, write_video

FRAMES = np.zeros((2, 8, 8, 3), dtype=np.uint8)


def test_write_to_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"cannot write '{tmp_path}': it is a directory; pass a file path"):
        write_video(tmp_path, FRAMES, fps=8)


def test_write_with_an_unknown_suffix(tmp_path):
    path = tmp_path / "clip.notavideo"
    with pytest.raises(ValueError, match=rf"cannot write '{path}': .*use .* a video suffix such as .mp4"):
        write_video(path, FRAMES, fps=8)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where no file can be created")
def test_write_where_files_cannot_be_created():
    with pytest.raises(OSError, match=r"cannot write '/proc/clip.mp4': .*use a writable location"):
        write_video("/proc/clip.mp4", FRAMES, fps=8)


def test_negative_stride_frames_write_and_read_back(tmp_path):
    frames = np.random.RandomState(0).randint(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    path = write_video(tmp_path / "reversed.mp4", frames[::-1, :, ::-1], fps=4)
    assert read_video(path, num_frames=4).frames.shape == (4, 16, 16, 3)
