"""A tiny random InternVL3 checkpoint (InternViT, pixel shuffle, Qwen2 LM), saved offline.

Mirrors `OpenGVLab/InternVL3-*-hf`: every video frame is an independent 448-style image (no
tiling for video), encoded by InternViT (CLS + patches, layer scale), the CLS dropped, the patch
grid pixel-shuffled 2x2 into channels (`downsample_ratio=0.5`), then LayerNorm -> Linear -> GELU ->
Linear. The processor writes `Frame{i}: <img><IMG_CONTEXT>*n</img>` per frame, joined by newlines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from transformers import (
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
)

from tl_video.testing.tiny_checkpoint import LMOptions, chat_tokenizer, lm_options, save_checkpoint, text_config

# The chat template of OpenGVLab/InternVL3-*-hf.
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# InternVL's processor reads these named tokens (and their ids) off the tokenizer.
SPECIAL_TOKENS = {
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
EXTRA_TOKENS = ["<|im_start|>"]


def save_tiny_internvl(
    folder: str | Path,
    *,
    seed: int = 0,
    image_size: int = 64,
    patch_size: int = 8,
    text_model_type: str = "qwen2",
    attention_bias: bool = False,
    vision_feature_layer: int = -1,
    with_chat_template: bool = True,
    **lm: Unpack[LMOptions],
) -> Path:
    """Build, randomly initialise and `save_pretrained` a tiny InternVL3 model + processor.

    With the defaults each frame is resized to 64x64, an 8x8 patch grid, pixel-shuffled to 4x4 =
    16 `<IMG_CONTEXT>` tokens; 4 frames give 64 of them (plus `Frame{i}: <img>`, `</img>`, newlines).
    `text_model_type="qwen3"` builds the InternVL3.5-style LM (per-head q/k norm; `attention_bias`
    then puts biases on q/k/v/o; head_dim defaults to hidden / heads, and InternVL3.5-1B/4B's
    wider heads are e.g. `head_dim=32` with 4 heads); Qwen2 always has q/k/v biases and ignores
    `attention_bias`. `lm` sets the LM shape (`LMOptions`).
    """
    tokenizer, template = chat_tokenizer(SPECIAL_TOKENS, EXTRA_TOKENS, INTERNVL_TEMPLATE, with_chat_template)
    options = lm_options(lm)
    family_fields = {}
    if text_model_type == "qwen3":
        options.setdefault("head_dim", options["hidden_size"] // options["num_attention_heads"])
        family_fields["attention_bias"] = attention_bias
    text = text_config(
        tokenizer, options, model_type=text_model_type,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-6,
        use_sliding_window=False, **family_fields,
    )
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": [image_size, image_size],
        "patch_size": [patch_size, patch_size],
        "attention_bias": True,
        "use_qk_norm": False,
        "norm_type": "layer_norm",
        "use_mean_pooling": True,
        "layer_scale_init_value": 0.1,
        "hidden_act": "gelu",
    }
    image_seq_length = (image_size // patch_size // 2) ** 2
    config = InternVLConfig(
        text_config=text,
        vision_config=vision_config,
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=image_seq_length,
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=options["tie_word_embeddings"],
    )
    size = {"height": image_size, "width": image_size}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size=size, crop_to_patches=False, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(
            size=size, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
        ),
        image_seq_length=image_seq_length,
        chat_template=template,
    )
    return save_checkpoint(folder, InternVLForConditionalGeneration, config, processor, seed=seed)
