"""VideoLLaMA3 (`VideoLlama3ForConditionalGeneration`): SigLIP-NaViT + bilinear merge + projector + Qwen2.5 LM.

Reference: transformers 5.24 `models/video_llama_3/modeling_video_llama_3.py` (`VideoLlama3Model.
get_video_features`, `forward`), `processing_video_llama_3.py` (`replace_video_token`) and
`video_processing_video_llama_3.py` (`_get_compression_mask`).

The processor writes `Time {t:.1f}s:<|video_pad|>*n_i` per frame, joined by commas (timestamps
are text between frames); `n_i` counts the tokens of frame i that survive token pruning by frame
differencing, so the layout depends on the video's content. The front end's grid marks exactly
the kept (frame, row, col); disable pruning with `model.frontend.token_pruning = False` (HF's
`use_token_compression` of the video processor). The LM is Qwen2 (q/k/v biases), 1D RoPE, no
extra residual writes.

DAMO's own published format (`Videollama3Qwen2ForCausalLM`, e.g. DAMO-NLP-SG/VideoLLaMA3-7B) is
converted into this one first (`tl_video/loading/published_videollama3.py`).

Known divergences: none in fp32. Without `video_metadata` HF assumes 1 fps for the timestamps
(and warns); `prepare` passes frames only, so timestamps read "Time 0.0s", "Time 1.0s", ....
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tl_video.frontend.videollama3 import VideoLlama3FrontEnd
from tl_video.loading.checkpoint import CheckpointError
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.internvl import qwen_text_config_fields
from tl_video.loading.llama_weights import convert_llama_weights


def _hf_class() -> type:
    from transformers import VideoLlama3ForConditionalGeneration

    return VideoLlama3ForConditionalGeneration


def _frontend(hf_model: nn.Module, processor: Any) -> VideoLlama3FrontEnd:
    config = hf_model.config
    inner = hf_model.model
    video_token = getattr(processor, "video_token", None) or "<|video_pad|>"
    token_id = processor.tokenizer.convert_tokens_to_ids(video_token)
    if token_id != config.video_token_id:
        raise CheckpointError(
            f"the processor's video token {video_token!r} has id {token_id} but the model replaces id "
            f"{config.video_token_id}; the tokenizer does not belong to this checkpoint"
        )
    return VideoLlama3FrontEnd(
        vision_model=inner.vision_model,
        projector=inner.projector,
        video_token_id=config.video_token_id,
        video_placeholder=video_token,
        video_processor=processor.video_processor,
    )


VIDEOLLAMA3 = FamilyAdapter(
    name="videollama3",
    architectures=("VideoLlama3ForConditionalGeneration",),
    hf_class=_hf_class,
    config_fields=lambda hf_config: qwen_text_config_fields(hf_config.text_config),
    language_model=lambda hf_model: hf_model.model.language_model,
    lm_head=lambda hf_model: hf_model.lm_head,
    build_frontend=_frontend,
    convert_weights=convert_llama_weights,
)
