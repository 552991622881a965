"""A tiny random Qwen2.5-VL checkpoint (windowed ViT, 2-frame tubelets, 2x2 merge, M-RoPE), saved offline.

Mirrors `Qwen/Qwen2.5-VL-*-Instruct`: a Conv3d patch embedding over (2 frames x p x p) tubelets, a
ViT with 2D rotary embeddings and window attention except in `fullatt_block_indexes`, a
`Qwen2_5_VLPatchMerger` that merges 2x2 patches into one LM token, and a Qwen2 LM with q/k/v bias,
GQA and multimodal RoPE (`mrope_section`, chunked T|H|W frequency bands).
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from tl_video.testing.tiny_checkpoint import (
    LMOptions, chat_tokenizer, edit_config, legacy_rope_keys, lm_options, save_checkpoint, text_config,
)

# The chat template of Qwen/Qwen2.5-VL-*-Instruct (default system prompt, vision wrapped in start/end).
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
EXTRA_TOKENS = [
    "<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"
]


def save_tiny_qwen2_5_vl(
    folder: str | Path,
    *,
    seed: int = 0,
    mrope_section: tuple[int, int, int] = (2, 3, 3),
    patch_size: int = 4,
    window_size: int = 16,
    tokens_per_second: int = 2,
    min_pixels: int = 16 * 16,
    max_pixels: int = 48 * 48,
    with_chat_template: bool = True,
    released_layout: bool = False,
    **lm: Unpack[LMOptions],
) -> Path:
    """Build, randomly initialise and `save_pretrained` a tiny Qwen2.5-VL model + processor.

    Frames are resized to multiples of `2 * patch_size` = 8 pixels within [min_pixels, max_pixels]
    per frame. A [4, 40, 48, 3] video becomes 2 tubelets of a 10x12 patch grid, merged to 5x6, so
    2 * 30 = 60 `<|video_pad|>` tokens. `window_size=16` makes 2x2-merged-token windows, so layer 0
    (windowed; layer 1 is full attention) really is windowed and padded at the grid edge.
    `mrope_section` splits the head_dim / 2 = 8 rotary frequencies into T|H|W bands as
    [16, 24, 24] splits 64 in the 7B model. `lm` sets the LM shape (`LMOptions`); HF's Qwen2.5-VL
    attention always uses hidden_size / num_heads, so `head_dim` is refused at load unless equal.

    `released_layout=True` writes config.json as `Qwen/Qwen2.5-VL-*-Instruct` ship it: the text
    fields flat at the top level (no `text_config`), `rope_theta` beside `rope_scaling: {type:
    "mrope", mrope_section}`, and a `sliding_window` that `use_sliding_window: false` leaves unused
    (16 tokens here with `max_window_layers: 1`, so a window applied by mistake would show).
    """
    tokenizer, template = chat_tokenizer(SPECIAL_TOKENS, EXTRA_TOKENS, QWEN2_VL_TEMPLATE, with_chat_template)
    options = lm_options(lm)
    rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": list(mrope_section)}
    text = text_config(
        tokenizer, options, rope_parameters=rope_parameters, rms_norm_eps=1e-6, use_sliding_window=False
    )
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "hidden_act": "silu",
        "patch_size": patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": window_size,
        "fullatt_block_indexes": [1],
        "out_hidden_size": options["hidden_size"],
        "tokens_per_second": tokens_per_second,
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=options["tie_word_embeddings"],
    )
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    patching = {"patch_size": patch_size, "temporal_patch_size": 2, "merge_size": 2}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **patching),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size, cap_pixels_per_frame=False, **patching),
        chat_template=template,
    )
    folder = save_checkpoint(folder, Qwen2_5_VLForConditionalGeneration, config, processor, seed=seed)
    if released_layout:
        edit_config(folder, _released_qwen2_5_vl_config)
    return folder


def _released_qwen2_5_vl_config(config: dict) -> dict:
    """The flat transformers-4.x layout of the released Qwen2.5-VL config.json files."""
    text = legacy_rope_keys(config.pop("text_config"), type="mrope")
    for key in ("model_type", "layer_types", "dtype"):
        text.pop(key, None)
    text.update(sliding_window=16, max_window_layers=1, use_sliding_window=False)
    return {**config, **text}
