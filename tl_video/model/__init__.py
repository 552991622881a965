"""The hooked language backbone: config, components, KV cache, video bank, model."""

from tl_video.model.config import VideoTransformerConfig
from tl_video.model.hooked_video_transformer import HookedVideoTransformer
from tl_video.model.kv_cache import KeyValueCache
from tl_video.model.video_bank import VideoBank

__all__ = ["HookedVideoTransformer", "KeyValueCache", "VideoBank", "VideoTransformerConfig"]
