"""Qwen2.5-VL and Qwen3-VL: tubelet ViT + merger, Qwen2/Qwen3 LM with multimodal RoPE (M-RoPE).

References (transformers 5.24): `models/qwen2_5_vl/modeling_qwen2_5_vl.py`
(`Qwen2_5_VLForConditionalGeneration`) and `models/qwen3_vl/modeling_qwen3_vl.py`
(`Qwen3VLForConditionalGeneration`); docs/families.md §4-§5.

Differences from the Llama template, all stated as config fields or front-end extras:
- Qwen2.5-VL: q/k/v biases always (hard-coded in `Qwen2_5_VLAttention`), none on o_proj;
  `d_head = hidden_size / num_heads`, as `Qwen2_5_VLAttention` derives it (a config `head_dim`
  that differs is refused: HF's rotary embedding would read it and disagree with its attention);
  chunked M-RoPE over `rope_parameters["mrope_section"]`; the M-RoPE time of a tubelet scales
  with `vision_config.tokens_per_second` and the clip's `second_per_grid_ts`.
- Qwen3-VL: per-head q/k RMSNorm, explicit `head_dim` (heads x head_dim need not be the hidden
  size: Qwen3-VL-4B has 32 heads of 128 over 2560), biases per `attention_bias`; M-RoPE
  always interleaved (HF ignores `rope_parameters["mrope_interleaved"]`); DeepStack features added
  to the video rows after LM layers 0..levels-1.

Known divergence, on purpose: transformers 5.24's Qwen2.5-VL `get_rope_index` starts the text
after a video at `start + max(h, w) / merge`, ignoring the video's temporal extent; we implement
the Qwen reference (`max + 1`, transformers <= 5.2; `tl_video.model.mrope_positions`). Where the two
differ, HF matches us only when given our `position_ids`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tl_video.frontend.qwen_vl import Qwen2_5_VLFrontEnd, Qwen3VLFrontEnd
from tl_video.loading.checkpoint import CheckpointError
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.llama_weights import convert_llama_weights
from tl_video.loading.llava_next_video import llama_config_fields, refuse_sliding_window

# `rope_parameters` keys that are not 1D RoPE parameters (the legacy `type: "mrope"` included).
_MROPE_KEYS = ("mrope_section", "mrope_interleaved", "type")


def _mrope_fields(text_config: Any, default_section: list[int], interleaved: bool) -> dict[str, Any]:
    fields = llama_config_fields(text_config)
    rope = dict(getattr(text_config, "rope_parameters", None) or {})
    fields["rope_parameters"] = {k: v for k, v in fields["rope_parameters"].items() if k not in _MROPE_KEYS}
    fields["mrope_section"] = tuple(rope.get("mrope_section") or default_section)
    fields["mrope_interleaved"] = interleaved
    refuse_sliding_window(text_config)
    return fields


def qwen2_5_vl_config_fields(hf_config: Any) -> dict[str, Any]:
    text_config = hf_config.text_config
    fields = _mrope_fields(text_config, [16, 24, 24], interleaved=False)
    fields["d_head"] = text_config.hidden_size // text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None)
    if head_dim is not None and head_dim != fields["d_head"]:
        raise CheckpointError(
            f"Qwen2.5-VL text config has head_dim={head_dim}, but Qwen2.5-VL's attention always uses "
            f"hidden_size / num_attention_heads = {fields['d_head']} (transformers' Qwen2_5_VLAttention) while its "
            "rotary embedding reads head_dim: the checkpoint cannot run consistently; remove head_dim from "
            "config.json or set it to hidden_size / num_attention_heads"
        )
    fields.update(attn_qkv_bias=True, attn_out_bias=False, mlp_bias=False)
    return fields


def qwen3_vl_config_fields(hf_config: Any) -> dict[str, Any]:
    fields = _mrope_fields(hf_config.text_config, [24, 20, 20], interleaved=True)
    fields.update(qk_norm=True, mlp_bias=False)
    return fields


def _qwen2_5_vl_class() -> type:
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration


def _qwen3_vl_class() -> type:
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration


def _qwen2_5_vl_frontend(hf_model: nn.Module, processor: Any) -> Qwen2_5_VLFrontEnd:
    config = hf_model.config
    return Qwen2_5_VLFrontEnd(
        visual=hf_model.model.visual,
        tokens_per_second=config.vision_config.tokens_per_second,
        video_token_id=config.video_token_id,
        video_placeholder=getattr(processor, "video_token", "<|video_pad|>"),
    )


def _qwen3_vl_frontend(hf_model: nn.Module, processor: Any) -> Qwen3VLFrontEnd:
    return Qwen3VLFrontEnd(
        visual=hf_model.model.visual,
        video_token_id=hf_model.config.video_token_id,
        video_placeholder=getattr(processor, "video_token", "<|video_pad|>"),
    )


QWEN2_5_VL = FamilyAdapter(
    name="qwen2_5_vl",
    architectures=("Qwen2_5_VLForConditionalGeneration",),
    hf_class=_qwen2_5_vl_class,
    config_fields=qwen2_5_vl_config_fields,
    language_model=lambda hf_model: hf_model.model.language_model,
    lm_head=lambda hf_model: hf_model.lm_head,
    build_frontend=_qwen2_5_vl_frontend,
    convert_weights=convert_llama_weights,
)

QWEN3_VL = FamilyAdapter(
    name="qwen3_vl",
    architectures=("Qwen3VLForConditionalGeneration",),
    hf_class=_qwen3_vl_class,
    config_fields=qwen3_vl_config_fields,
    language_model=lambda hf_model: hf_model.model.language_model,
    lm_head=lambda hf_model: hf_model.lm_head,
    build_frontend=_qwen3_vl_frontend,
    convert_weights=convert_llama_weights,
)
