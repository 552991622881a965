"""Projected-video-token front ends, one small adapter per model family."""

from tl_video.frontend.base import VideoFeatures, VideoFrontEnd
from tl_video.frontend.llava_next_video import LlavaNextVideoFrontEnd

__all__ = ["LlavaNextVideoFrontEnd", "VideoFeatures", "VideoFrontEnd"]
