"""LLaVA-OneVision / LLaVA-Video (`LlavaOnevisionForConditionalGeneration`): SigLIP + projector +
bilinear pooling + newline, Qwen2 LM.

Reference: transformers 5.24 `models/llava_onevision/modeling_llava_onevision.py` (video path:
`LlavaOnevisionModel.get_video_features`, `apply_pooling`) and `models/qwen2/modeling_qwen2.py`
(the LM). LLaVA-Video-7B-Qwen2 checkpoints converted to HF use the same class.

The Qwen2 LM differs from Llama only in its biases: `q_proj`, `k_proj`, `v_proj` always have one
(hard-coded in `Qwen2Attention`, whatever `attention_bias` says), `o_proj` and the MLP never.
Known divergences: Qwen2's sliding-window attention (`use_sliding_window`, layers at or above
`max_window_layers`) is not implemented; such a checkpoint is refused at load time rather than
run with full attention (an unused `sliding_window`, as released configs write it, is accepted). The video newline gets grid entry (T-1, ceil(g/2), 0); see
`tl_video.frontend.llava_onevision`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tl_video.frontend.llava_onevision import LlavaOnevisionFrontEnd
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.llama_weights import convert_llama_weights
from tl_video.loading.llava_next_video import llama_config_fields, refuse_sliding_window


def qwen2_config_fields(text_config: Any) -> dict[str, Any]:
    """VideoTransformerConfig fields of a Qwen2 text config (q/k/v bias, no o_proj or MLP bias)."""
    refuse_sliding_window(text_config)
    fields = llama_config_fields(text_config)
    fields.update(attn_qkv_bias=True, attn_out_bias=False, mlp_bias=False)
    return fields


def _hf_class() -> type:
    from transformers import LlavaOnevisionForConditionalGeneration

    return LlavaOnevisionForConditionalGeneration


def _frontend(hf_model: nn.Module, processor: Any) -> LlavaOnevisionFrontEnd:
    config = hf_model.config
    inner = hf_model.model
    return LlavaOnevisionFrontEnd(
        vision_tower=inner.vision_tower,
        multi_modal_projector=inner.multi_modal_projector,
        image_newline=inner.image_newline,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        grid_side=config.vision_config.image_size // config.vision_config.patch_size,
        video_token_id=config.video_token_id,
        video_placeholder=getattr(processor, "video_token", "<video>"),
    )


LLAVA_ONEVISION = FamilyAdapter(
    name="llava_onevision",
    architectures=("LlavaOnevisionForConditionalGeneration",),
    hf_class=_hf_class,
    config_fields=lambda hf_config: qwen2_config_fields(hf_config.text_config),
    language_model=lambda hf_model: hf_model.model.language_model,
    lm_head=lambda hf_model: hf_model.lm_head,
    build_frontend=_frontend,
    convert_weights=convert_llama_weights,
)
