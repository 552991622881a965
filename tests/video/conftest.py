"""Real video files for the video tests: written with PyAV, read back with decord (no mocks).

"Indexed" videos encode each frame's index in its grey level (12 + 10 * i), so a decoded frame
can be traced back to its source frame despite lossy compression. Helpers are handed out as
fixtures (``indexed``), because a second module named ``conftest`` cannot be imported reliably.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tl_video.video import write_video

LEVEL0, STEP = 12, 10
MAX_INDEXED_FRAMES = 24


def indexed_frames(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` frames whose grey level encodes the frame index."""
    if num_frames > MAX_INDEXED_FRAMES:
        raise ValueError(f"at most {MAX_INDEXED_FRAMES} indexed frames fit in 0..255")
    levels = LEVEL0 + STEP * np.arange(num_frames, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def frame_ids(frames: np.ndarray) -> list[int]:
    """The source index of each decoded indexed frame."""
    return [int(round((float(f.mean()) - LEVEL0) / STEP)) for f in frames]


class IndexedVideos:
    """Writes indexed videos into a folder and decodes frame ids."""

    frames = staticmethod(indexed_frames)
    ids = staticmethod(frame_ids)

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, num_frames: int = 16, fps: float = 8.0, name: str = "indexed.mp4", width: int = 32) -> Path:
        return write_video(self.folder / name, indexed_frames(num_frames, width=width), fps)

    def cut_in_half(self, path: Path, name: str) -> Path:
        """Copy the first half of ``path``'s bytes to a new file: an interrupted download."""
        data = path.read_bytes()
        out = self.folder / name
        out.write_bytes(data[: len(data) // 2])
        return out


@pytest.fixture
def indexed(tmp_path: Path) -> IndexedVideos:
    return IndexedVideos(tmp_path)


@pytest.fixture
def zero_frame_mp4(tmp_path: Path) -> Path:
    """An mp4 whose header was written but which holds no frames."""
    path = tmp_path / "zero_frames.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    return path


@pytest.fixture
def audio_only_mp4(tmp_path: Path) -> Path:
    """A valid mp4 with an audio stream and no video stream."""
    path = tmp_path / "audio_only.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
