"""PLLaVA-pooled LLaVA-NeXT "Video-FT" checkpoints: CLIP + projector + 3D adaptive pool, Llama LM.

These load as a plain `LlavaForConditionalGeneration` (transformers 5.24
`models/llava/modeling_llava.py`; LM: `models/llama/modeling_llama.py`), so the family is told
apart by its config.json: `model_type: "llava"` plus `pooling_shape` (and `use_pooling`,
`frame_shape`, `num_frames`, `pooling_method`). A LLaVA config without `pooling_shape` is a plain
image LLaVA and is refused by the registry, listing the supported architectures.

transformers has no video path for them; the front end (`tl_video.frontend.pllava`) follows
PLLaVA's `PllavaMultiModalProjector`, with `tl_video.testing.tiny_pllava.pllava_reference_video_features`
as the parity oracle. The language model is Llama/Vicuna (no biases, MHA, 1D RoPE).

Known divergences: only `pooling_method: "avg"` with `use_pooling: true` exists in the released
checkpoints and is supported (anything else is refused); PLLaVA's repetition of short clips up to
`num_frames` is not done (the adaptive pool runs on the clip as given). LoRA fine-tunes are merged
by `from_pretrained(..., lora_adapter=folder)` (`tl_video.loading.lora`). Checkpoints as PLLaVA's code
publishes them (`PllavaForConditionalGeneration`, PEFT-wrapped LoRA) and image LLaVA-NeXT ones run
through PLLaVA pooling (`pooling_shape=`) are converted into this family's layout first
(`tl_video.loading.published_pllava`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tl_video.frontend.pllava import PllavaFrontEnd
from tl_video.loading.checkpoint import CheckpointError
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.llama_weights import convert_llama_weights
from tl_video.loading.llava_next_video import llama_config_fields


def pllava_pooling_shape(config: Any) -> tuple[int, int, int]:
    """`config.pooling_shape` as (T', h', w'), after checking the pooling options are PLLaVA's."""
    method = getattr(config, "pooling_method", "avg")
    if method != "avg":
        raise CheckpointError(f"PLLaVA pooling_method {method!r} is not supported (only 'avg', adaptive_avg_pool3d)")
    if not getattr(config, "use_pooling", True):
        raise CheckpointError("this PLLaVA config has use_pooling=false; only pooled checkpoints are supported")
    shape = list(getattr(config, "pooling_shape", None) or [])
    if len(shape) != 3 or not all(isinstance(size, int) and size > 0 for size in shape):
        raise CheckpointError(f"pooling_shape must be three positive integers [T', h', w'], got {shape}")
    return tuple(shape)


def _hf_class() -> type:
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration


def _frontend(hf_model: nn.Module, processor: Any) -> PllavaFrontEnd:
    config = hf_model.config
    inner = hf_model.model
    return PllavaFrontEnd(
        vision_tower=inner.vision_tower,
        multi_modal_projector=inner.multi_modal_projector,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        pooling_shape=pllava_pooling_shape(config),
        video_token_id=config.image_token_id,
        # the text of `image_token_id` (`<image>`), whatever the processor calls its video token
        video_placeholder=processor.tokenizer.convert_ids_to_tokens(config.image_token_id),
    )


PLLAVA = FamilyAdapter(
    name="pllava",
    architectures=("LlavaForConditionalGeneration",),
    hf_class=_hf_class,
    config_fields=lambda hf_config: llama_config_fields(hf_config.text_config),
    language_model=lambda hf_model: hf_model.model.language_model,
    lm_head=lambda hf_model: hf_model.lm_head,
    build_frontend=_frontend,
    convert_weights=convert_llama_weights,
    required_config_keys=("pooling_shape",),
)
