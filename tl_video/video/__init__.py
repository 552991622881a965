"""Video input: decoding and frame sampling, writing, and corruptions for activation patching.

Data flows one way: video file -> :func:`read_video` -> ``uint8 [T, H, W, 3]``
frames -> (optionally a corruption of the same shape) -> the model's front end.
"""

from tl_video.video.corruption_specs import (
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
    register_corruption,
)
from tl_video.video.corruptions import (
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
from tl_video.video.decode import DEFAULT_NUM_FRAMES, DecodedVideo, read_video
from tl_video.video.errors import (
    EmptyVideoError,
    InvalidTimeRangeError,
    TruncatedVideoError,
    UnreadableVideoError,
    VideoError,
    VideoNotFoundError,
    VideoTooShortError,
)
from tl_video.video.frames import check_frames
from tl_video.video.sampling import (
    mvbench_segment_indices,
    num_frames_at_fps,
    resolve_window,
    segment_midpoint_indices,
)
from tl_video.video.timing import VideoTiming
from tl_video.video.writer import default_codec, write_video

__all__ = [
    # decoding and sampling
    "read_video",
    "DecodedVideo",
    "DEFAULT_NUM_FRAMES",
    "segment_midpoint_indices",
    "mvbench_segment_indices",
    "num_frames_at_fps",
    "resolve_window",
    "check_frames",
    "VideoTiming",
    # writing
    "write_video",
    "default_codec",
    # corruptions (functions)
    "reverse",
    "shuffle",
    "permutation_for_shuffle",
    "freeze",
    "drop_and_repeat",
    "swap_spans",
    "gaussian_noise",
    "blank",
    "substitute",
    # corruptions (specs)
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
    # errors
    "VideoError",
    "VideoNotFoundError",
    "UnreadableVideoError",
    "TruncatedVideoError",
    "EmptyVideoError",
    "VideoTooShortError",
    "InvalidTimeRangeError",
]
