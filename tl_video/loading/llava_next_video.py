"""LLaVA-NeXT-Video (`LlavaNextVideoForConditionalGeneration`): CLIP + 2x2 pool + projector + Llama LM.

Reference: transformers 5.x `models/llava_next_video/modeling_llava_next_video.py`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tl_video.frontend.llava_next_video import LlavaNextVideoFrontEnd
from tl_video.loading.checkpoint import CheckpointError
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.llama_weights import convert_llama_weights


def refuse_sliding_window(text_config: Any) -> None:
    """A Qwen2/Qwen2.5 LM whose sliding-window layers can mask anything is refused (full attention only).

    Released checkpoints write `sliding_window` with `use_sliding_window: false` (every layer
    `full_attention` in `layer_types`), a null window (Mistral-7B-Instruct-v0.2), or a window no
    shorter than the context: all accepted.
    """
    window = getattr(text_config, "sliding_window", None)
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is None:  # Mistral: a non-null window applies to every layer
        layer_types = ["full_attention" if window is None else "sliding_attention"] * text_config.num_hidden_layers
    sliding = [i for i, kind in enumerate(layer_types) if kind != "full_attention"]
    if sliding and (window is None or window < text_config.max_position_embeddings):
        fix = "use_sliding_window=false" if hasattr(text_config, "use_sliding_window") else "sliding_window=null"
        raise CheckpointError(
            f"the {text_config.model_type} language model uses sliding-window attention in layers {sliding[:8]} "
            f"(a sliding window of {window} tokens); tl_video implements full causal attention only. If the window exceeds "
            f"your inputs, set {fix} in config.json's text config."
        )


def llama_config_fields(text_config: Any) -> dict[str, Any]:
    """VideoTransformerConfig fields of a Llama/Vicuna/Mistral/Qwen2/Qwen3-style HF text config.

    `d_head` is the config's `head_dim` when it has one (as HF's Llama, Qwen2, Qwen3 attention
    read it: heads x head_dim need not be the hidden size), else hidden_size / num_heads.
    """
    refuse_sliding_window(text_config)
    n_heads = text_config.num_attention_heads
    d_head = getattr(text_config, "head_dim", None) or text_config.hidden_size // n_heads
    rope = dict(getattr(text_config, "rope_parameters", None) or {})
    rope.setdefault("rope_type", "default")
    rope.setdefault("rope_theta", getattr(text_config, "rope_theta", 10000.0))
    return dict(
        d_model=text_config.hidden_size,
        d_head=d_head,
        n_layers=text_config.num_hidden_layers,
        n_heads=n_heads,
        n_key_value_heads=text_config.num_key_value_heads or n_heads,
        d_mlp=text_config.intermediate_size,
        d_vocab=text_config.vocab_size,
        n_ctx=text_config.max_position_embeddings,
        max_position_embeddings=text_config.max_position_embeddings,
        eps=text_config.rms_norm_eps,
        act_fn=text_config.hidden_act,
        rope_parameters=rope,
        attn_qkv_bias=bool(getattr(text_config, "attention_bias", False)),
        attn_out_bias=bool(getattr(text_config, "attention_bias", False)),
        mlp_bias=bool(getattr(text_config, "mlp_bias", False)),
    )


def _hf_class() -> type:
    from transformers import LlavaNextVideoForConditionalGeneration

    return LlavaNextVideoForConditionalGeneration


def _frontend(hf_model: nn.Module, processor: Any) -> LlavaNextVideoFrontEnd:
    config = hf_model.config
    inner = hf_model.model
    return LlavaNextVideoFrontEnd(
        vision_tower=inner.vision_tower,
        vision_resampler=inner.vision_resampler,
        multi_modal_projector=inner.multi_modal_projector,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        video_token_id=config.video_token_index,
        video_placeholder=getattr(processor, "video_token", "<video>"),
    )


LLAVA_NEXT_VIDEO = FamilyAdapter(
    name="llava_next_video",
    architectures=("LlavaNextVideoForConditionalGeneration",),
    hf_class=_hf_class,
    config_fields=lambda hf_config: llama_config_fields(hf_config.text_config),
    language_model=lambda hf_model: hf_model.model.language_model,
    lm_head=lambda hf_model: hf_model.lm_head,
    build_frontend=_frontend,
    convert_weights=convert_llama_weights,
)
