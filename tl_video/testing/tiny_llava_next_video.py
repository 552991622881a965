"""A tiny random LLaVA-NeXT-Video checkpoint (CLIP tower, 2x2 average pool, Llama LM), saved offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Unpack

from transformers import (
    CLIPVisionConfig,
    LlavaNextImageProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoProcessor,
    LlavaNextVideoVideoProcessor,
)

from tl_video.testing.random_init import widen_matrices
from tl_video.testing.tiny_checkpoint import LMOptions, chat_tokenizer, lm_options, save_checkpoint, text_config

# Vicuna-style template of the llava-hf LLaVA-NeXT-Video checkpoints: the video comes first.
VICUNA_VIDEO_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] if message['content'] is string "
    "else message['content'][0]['text'] }}{{ ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif item['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ ' ' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def save_tiny_llava_next_video(
    folder: str | Path,
    *,
    attention_bias: bool = False,
    rope_parameters: dict | None = None,
    image_size: int = 32,
    patch_size: int = 8,
    seed: int = 0,
    with_chat_template: bool = True,
    tokenizer: Any = None,
    vision_hidden_size: int = 32,
    vision_intermediate_size: int = 64,
    vision_num_hidden_layers: int = 2,
    vision_num_attention_heads: int = 2,
    vision_feature_layer: int = -2,
    widen_init: bool = True,
    extra_config: dict[str, Any] | None = None,
    text_fields: dict[str, Any] | None = None,
    **lm: Unpack[LMOptions],
) -> Path:
    """Build, randomly initialise and `save_pretrained` a tiny LLaVA-NeXT-Video model + processor.

    With the defaults each frame becomes (32/8)^2 = 16 CLIP patches, pooled 2x2 to 4 video tokens.
    `lm` sets the Llama LM shape (`LMOptions`; 4 key/value heads unless given, i.e. no GQA; Llama
    reads an explicit `head_dim`). `tokenizer` replaces the byte-level one (it must hold the
    `SPECIAL_TOKENS` and `<video>`, `<image>`); `widen_init=False` keeps transformers' own
    initialisation (std 0.02, for training); `extra_config` entries are stored as extra fields of
    config.json (e.g. `num_frames`); `text_fields` are further text config fields (e.g.
    `{"model_type": "mistral", "sliding_window": None}`, the Mistral LM of LLaVA-NeXT-Video-7B-32K).
    """
    if tokenizer is None:
        tokenizer, template = chat_tokenizer(SPECIAL_TOKENS, ["<video>", "<image>"], VICUNA_VIDEO_TEMPLATE, with_chat_template)
    else:
        template = VICUNA_VIDEO_TEMPLATE if with_chat_template else None
        if with_chat_template and not tokenizer.chat_template:
            tokenizer.chat_template = VICUNA_VIDEO_TEMPLATE
    options = lm_options(lm, num_key_value_heads=4)
    llama = {
        "model_type": "llama", "attention_bias": attention_bias, "rms_norm_eps": 1e-5,
        "rope_parameters": rope_parameters or {"rope_type": "default", "rope_theta": 10000.0},
    }
    text = text_config(tokenizer, options, bos=True, **(llama | (text_fields or {})))
    vision_config = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=vision_intermediate_size,
        num_hidden_layers=vision_num_hidden_layers,
        num_attention_heads=vision_num_attention_heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden_size,
    )
    config = LlavaNextVideoConfig(
        vision_config=vision_config,
        text_config=text,
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[[image_size, image_size]],
        video_seq_length=(image_size // patch_size) ** 2 // 4,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=vision_feature_layer,
        tie_word_embeddings=options["tie_word_embeddings"],
        **(extra_config or {}),
    )
    crop = {"height": image_size, "width": image_size}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size={"shortest_edge": image_size}, crop_size=crop),
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": image_size}, crop_size=crop, image_grid_pinpoints=[[image_size, image_size]]
        ),
        tokenizer=tokenizer,
        chat_template=template,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
    )
    init = widen_matrices if widen_init else None
    return save_checkpoint(folder, LlavaNextVideoForConditionalGeneration, config, processor, seed=seed, init=init)
