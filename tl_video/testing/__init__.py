"""Offline builders of tiny, random-weight checkpoints of every supported family.

They exist so tests, tutorials and the demo can exercise the real loading path
(`HookedVideoTransformer.from_pretrained` on a saved folder) without a model hub.
"""

from tl_video.testing.tokenizer import build_byte_tokenizer
from tl_video.testing.tiny_checkpoint import TINY_LM, LMOptions, save_checkpoint
from tl_video.testing.tiny_internvl import save_tiny_internvl
from tl_video.testing.tiny_llava_next_video import save_tiny_llava_next_video
from tl_video.testing.tiny_llava_onevision import save_tiny_llava_onevision
from tl_video.testing.tiny_pllava import pllava_reference_video_features, save_tiny_pllava
from tl_video.testing.tiny_qwen2_5_vl import save_tiny_qwen2_5_vl
from tl_video.testing.tiny_qwen3_vl import save_tiny_qwen3_vl
from tl_video.testing.tiny_videollama3 import save_tiny_videollama3

__all__ = [
    "LMOptions",
    "TINY_LM",
    "save_checkpoint",
    "build_byte_tokenizer",
    "pllava_reference_video_features",
    "save_tiny_internvl",
    "save_tiny_llava_next_video",
    "save_tiny_llava_onevision",
    "save_tiny_pllava",
    "save_tiny_qwen2_5_vl",
    "save_tiny_qwen3_vl",
    "save_tiny_videollama3",
]
