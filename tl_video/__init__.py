"""tl_video: TransformerLens-style circuit analysis for Video Large Language Models."""

from tl_video.model import HookedVideoTransformer, KeyValueCache, VideoTransformerConfig
from tl_video.prompts import PreparedInput, TokenLayout

__all__ = ["HookedVideoTransformer", "KeyValueCache", "PreparedInput", "TokenLayout", "VideoTransformerConfig"]
__version__ = "0.4.0"
