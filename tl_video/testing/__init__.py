"""Offline builders of tiny, random-weight checkpoints of every supported family.

They exist so tests, tutorials and the demo can exercise the real loading path
(`HookedVideoTransformer.from_pretrained` on a saved folder) without a model hub.
"""

from tl_video.testing.tokenizer import build_byte_tokenizer
from tl_video.testing.tiny_llava_next_video import save_tiny_llava_next_video

__all__ = ["build_byte_tokenizer", "save_tiny_llava_next_video"]
