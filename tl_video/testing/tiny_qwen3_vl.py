"""A tiny random Qwen3-VL checkpoint (interleaved M-RoPE, q/k RMSNorm, DeepStack), saved offline.

Mirrors `Qwen/Qwen3-VL-*-Instruct`: a Conv3d tubelet embedding plus a learned position table
bilinearly resampled to each grid, a ViT with 2D rotary embeddings, a 2x2 patch merger, three
DeepStack mergers whose outputs are added to the LM residual stream after decoder layers 0, 1, 2,
and a Qwen3 LM (per-head q/k RMSNorm, no biases, GQA, interleaved multimodal RoPE). Each temporal
patch is its own `<t seconds><|vision_start|>...<|vision_end|>` block in the prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from transformers import (
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from tl_video.testing.tiny_checkpoint import (
    LMOptions, chat_tokenizer, edit_config, legacy_rope_keys, lm_options, save_checkpoint, text_config,
)

# The vision part of the Qwen/Qwen3-VL-*-Instruct template (no default system prompt; tools and
# reasoning branches omitted).
QWEN3_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
EXTRA_TOKENS = [
    "<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"
]


def save_tiny_qwen3_vl(
    folder: str | Path,
    *,
    seed: int = 0,
    mrope_section: tuple[int, int, int] = (4, 2, 2),
    patch_size: int = 4,
    num_position_embeddings: int = 16,
    min_pixels: int = 4 * 16 * 16,
    max_pixels: int = 16 * 48 * 48,
    with_chat_template: bool = True,
    released_layout: bool = False,
    **lm: Unpack[LMOptions],
) -> Path:
    """Build, randomly initialise and `save_pretrained` a tiny Qwen3-VL model + processor.

    The vision tower has 3 layers with `deepstack_visual_indexes=[0, 1, 2]`, so the LM (3 layers by
    default) receives DeepStack features after each of its layers 0, 1, 2. Unlike Qwen2.5-VL the
    pixel budget [min_pixels, max_pixels] is for the whole clip (T x H x W). A [4, 40, 48, 3]
    video becomes 2 temporal patches of a 10x12 grid, merged to 5x6: 2 * 30 = 60
    `<|video_pad|>` tokens. The 4x4 learned position table (`num_position_embeddings=16`) is
    resampled to 10x12. `mrope_section` [4, 2, 2] interleaves the 8 rotary frequencies
    T H W T H W T T, as [24, 20, 20] does for 64 frequencies in the real models; it must sum to
    head_dim / 2. `lm` sets the LM shape (`LMOptions`; head_dim defaults to hidden / heads here,
    and Qwen3-VL-4B's 32 heads of 128 over a 2560 hidden size are e.g. `head_dim=32` with 4 heads).
    `released_layout=True` writes the text config's rope keys as `Qwen/Qwen3-VL-*-Instruct` ship
    them (`rope_theta` beside `rope_scaling`).
    """
    tokenizer, template = chat_tokenizer(SPECIAL_TOKENS, EXTRA_TOKENS, QWEN3_VL_TEMPLATE, with_chat_template)
    options = lm_options(lm, num_hidden_layers=3)
    options.setdefault("head_dim", options["hidden_size"] // options["num_attention_heads"])
    rope_parameters = {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": list(mrope_section),
        "mrope_interleaved": True,
    }
    text = text_config(tokenizer, options, rope_parameters=rope_parameters, rms_norm_eps=1e-6, attention_bias=False)
    vision_config = {
        "depth": 3,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "hidden_act": "gelu_pytorch_tanh",
        "patch_size": patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": options["hidden_size"],
        "num_position_embeddings": num_position_embeddings,
        "deepstack_visual_indexes": [0, 1, 2],
    }
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=vision_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=options["tie_word_embeddings"],
    )
    patching = {"patch_size": patch_size, "temporal_patch_size": 2, "merge_size": 2}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            size={"shortest_edge": min_pixels // 4, "longest_edge": max_pixels // 4},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            **patching,
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
            cap_pixels_per_frame=False,
            **patching,
        ),
        chat_template=template,
    )
    folder = save_checkpoint(folder, Qwen3VLForConditionalGeneration, config, processor, seed=seed)
    if released_layout:
        edit_config(folder, lambda saved: {**saved, "text_config": legacy_rope_keys(saved["text_config"])})
    return folder
