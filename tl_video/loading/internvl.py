"""InternVL (`InternVLForConditionalGeneration`): InternViT + pixel shuffle + projector + Qwen2.5/Qwen3/Llama/Phi-3 LM.

Reference: transformers 5.24 `models/internvl/modeling_internvl.py` (`InternVLModel.get_image_features`,
`pixel_shuffle`, `forward`) and `processing_internvl.py` (`replace_video_token`).

Frames are images: there is no `get_video_features`; the processor returns the frames as
`pixel_values` [T, 3, H, W] and writes `Frame{i}: <img><IMG_CONTEXT>*n</img>` per frame, joined by
newlines, in place of the prompt's `<video>`. Only `<IMG_CONTEXT>` (`config.image_token_id`) rows
are replaced; `Frame{i}: `, `<img>`, `</img>` and the newlines stay text tokens between the
frames, so per-frame spans come from the front end's grid. The LM is HF's `AutoModel` for the
text config: Qwen2 (InternVL3: q/k/v biases, no o_proj bias), Qwen3 (InternVL3.5: per-head q/k
RMSNorm, `attention_bias` on q/k/v/o), Llama or Phi-3 (Mini-InternVL-Chat-4B-V1-5 and its
fine-tunes, converted from the InternVL-Chat format by `published_internvl_chat`: fused qkv and
gate/up projections, LongRoPE); 1D RoPE, no extra residual writes.

Known divergences: none in fp32 (parity tests: logits, residuals, patterns, video features,
greedy generation). Tiled images (`crop_to_patches`) are not a video path and are not supported;
neither are LMs with sliding-window layers (refused at load).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tl_video.frontend.internvl import InternVLFrontEnd
from tl_video.loading.checkpoint import CheckpointError
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.llama_weights import convert_llama_weights
from tl_video.loading.llava_next_video import llama_config_fields


def qwen_text_config_fields(text_config: Any) -> dict[str, Any]:
    """Config fields of the Llama-shaped LM a VLM wraps, with each model type's biases and norms.

    Qwen2 hard-codes q/k/v biases (and no o_proj bias) regardless of `attention_bias`; Qwen3 uses
    `attention_bias` for q/k/v/o and normalises queries and keys per head; Llama reads its flags;
    Phi-3 has no biases, fused projections (split by the weight converter) and LongRoPE.
    """
    model_type = getattr(text_config, "model_type", None)
    fields = llama_config_fields(text_config)
    if model_type == "qwen2":
        fields.update(attn_qkv_bias=True, attn_out_bias=False, mlp_bias=False)
    elif model_type == "qwen3":
        bias = bool(getattr(text_config, "attention_bias", False))
        fields.update(attn_qkv_bias=bias, attn_out_bias=bias, mlp_bias=False, qk_norm=True)
    elif model_type == "phi3":
        fields.update(phi3_config_fields(text_config))
    elif model_type != "llama":
        raise CheckpointError(
            f"unsupported language model type {model_type!r} inside the VLM; supported: llama, qwen2, qwen3, phi3"
        )
    sliding = [i for i, kind in enumerate(getattr(text_config, "layer_types", None) or []) if kind != "full_attention"]
    if sliding:
        raise CheckpointError(
            f"the language model uses sliding-window attention in layers {sliding[:8]}, which the hooked "
            "backbone does not implement; set use_sliding_window=false in the text config if the checkpoint allows"
        )
    return fields


def phi3_config_fields(text_config: Any) -> dict[str, Any]:
    """Phi-3's differences from Llama: no biases, LongRoPE's pre-training length, a window that never binds.

    `Phi3Config` keeps `original_max_position_embeddings` at the top level as well as in
    `rope_parameters`; LongRoPE reads it from the latter. Phi-3-mini-128k declares a
    `sliding_window` (262144) larger than its context (131072): such a window never masks
    anything and is accepted; a smaller one is refused (the backbone has no sliding window).
    """
    rope = dict(getattr(text_config, "rope_parameters", None) or {})
    rope.setdefault("rope_type", "default")
    rope.setdefault("rope_theta", 10000.0)
    if rope["rope_type"] == "longrope" and "original_max_position_embeddings" not in rope:
        rope["original_max_position_embeddings"] = text_config.original_max_position_embeddings
    window = getattr(text_config, "sliding_window", None)
    if window is not None and window < text_config.max_position_embeddings:
        raise CheckpointError(
            f"the Phi-3 language model uses a sliding window of {window} tokens (< max_position_embeddings "
            f"{text_config.max_position_embeddings}), which the hooked backbone does not implement; set "
            "sliding_window to null or to at least max_position_embeddings if the checkpoint allows"
        )
    return dict(rope_parameters=rope, attn_qkv_bias=False, attn_out_bias=False, mlp_bias=False)


def _hf_class() -> type:
    from transformers import InternVLForConditionalGeneration

    return InternVLForConditionalGeneration


def _frontend(hf_model: nn.Module, processor: Any) -> InternVLFrontEnd:
    config = hf_model.config
    inner = hf_model.model
    video_token = getattr(processor, "video_token", None) or "<video>"
    context_id = processor.tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<IMG_CONTEXT>"))
    if context_id != config.image_token_id:
        raise CheckpointError(
            f"the processor's image context token has id {context_id} but the model replaces id "
            f"{config.image_token_id}; the tokenizer does not belong to this checkpoint"
        )
    return InternVLFrontEnd(
        vision_tower=inner.vision_tower,
        multi_modal_projector=inner.multi_modal_projector,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        downsample_ratio=config.downsample_ratio,
        video_token_id=config.image_token_id,
        video_placeholder=video_token,
    )


INTERNVL = FamilyAdapter(
    name="internvl",
    architectures=("InternVLForConditionalGeneration",),
    hf_class=_hf_class,
    config_fields=lambda hf_config: qwen_text_config_fields(hf_config.text_config),
    language_model=lambda hf_model: hf_model.model.language_model,
    lm_head=lambda hf_model: hf_model.lm_head,
    build_frontend=_frontend,
    convert_weights=convert_llama_weights,
)
