"""Projected-video-token front ends, one small adapter per model family."""

from tl_video.frontend.base import VideoFeatures, VideoFrontEnd
from tl_video.frontend.internvl import InternVLFrontEnd
from tl_video.frontend.llava_next_video import LlavaNextVideoFrontEnd
from tl_video.frontend.llava_onevision import LlavaOnevisionFrontEnd
from tl_video.frontend.pllava import PllavaFrontEnd
from tl_video.frontend.qwen_vl import Qwen2_5_VLFrontEnd, Qwen3VLFrontEnd
from tl_video.frontend.videollama3 import VideoLlama3FrontEnd

__all__ = ["InternVLFrontEnd", "LlavaNextVideoFrontEnd", "LlavaOnevisionFrontEnd", "PllavaFrontEnd", "Qwen2_5_VLFrontEnd", "Qwen3VLFrontEnd", "VideoLlama3FrontEnd", "VideoFeatures", "VideoFrontEnd"]
