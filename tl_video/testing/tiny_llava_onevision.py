"""A tiny random LLaVA-OneVision checkpoint (SigLIP tower, Qwen2 LM, bilinear video pooling), saved offline.

Mirrors `llava-hf/llava-onevision-qwen2-*-ov-hf`: SigLIP without head, last layer, all patches
("full"), 2-layer GELU projector, then `LlavaOnevisionModel.apply_pooling` (bilinear resize of each
frame's grid to ceil(g/2) x ceil(g/2)) and one `image_newline` row after the whole video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Unpack

from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    SiglipVisionConfig,
)

from tl_video.testing.tiny_checkpoint import LMOptions, chat_tokenizer, lm_options, save_checkpoint, text_config

# The chat template of llava-hf/llava-onevision-qwen2-7b-ov-hf: images, then videos, then text.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}{% endif %}{{ '<|im_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
EXTRA_TOKENS = ["<|im_start|>", "<image>", "<video>"]


def save_tiny_llava_onevision(
    folder: str | Path,
    *,
    seed: int = 0,
    image_size: int = 30,
    patch_size: int = 6,
    with_chat_template: bool = True,
    text_fields: dict[str, Any] | None = None,
    **lm: Unpack[LMOptions],
) -> Path:
    """Build, randomly initialise and `save_pretrained` a tiny LLaVA-OneVision model + processor.

    With the defaults each frame is a 5x5 SigLIP grid, bilinearly resized to 3x3 = 9 video tokens
    (an odd grid on purpose, so `ceil` and the interpolation weights matter); 4 frames give
    4 * 9 + 1 (newline) = 37 `<video>` tokens. `lm` sets the Qwen2 LM shape (`LMOptions`; Qwen2
    reads an explicit `head_dim`); `text_fields` are further Qwen2 config fields as released
    checkpoints write them (e.g. an unused `sliding_window` with `use_sliding_window: false`).
    """
    tokenizer, template = chat_tokenizer(SPECIAL_TOKENS, EXTRA_TOKENS, ONEVISION_TEMPLATE, with_chat_template)
    options = lm_options(lm)
    qwen2 = {
        "model_type": "qwen2", "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "rms_norm_eps": 1e-6, "use_sliding_window": False,
    }
    text = text_config(tokenizer, options, **(qwen2 | (text_fields or {})))
    vision_config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,
    )
    grid_pinpoints = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]]
    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=grid_pinpoints,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=options["tie_word_embeddings"],
    )
    size = {"height": image_size, "width": image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=grid_pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=template,
    )
    return save_checkpoint(folder, LlavaOnevisionForConditionalGeneration, config, processor, seed=seed)
