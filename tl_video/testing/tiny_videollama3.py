"""A tiny random VideoLLaMA3 checkpoint (NaViT-style SigLIP, bilinear 2x downsampling, Qwen2 LM), saved offline.

Mirrors `lkhl/VideoLLaMA3-*-HF` (transformers' `video_llama_3`): every frame is patchified at its
own resolution (no temporal patch), encoded with 2D rotary attention inside each frame, layer
normed, bilinearly resized from the (h, w) patch grid to (h/2, w/2), then Linear -> GELU -> Linear.
The processor writes `Time {t:.1f}s:<|video_pad|>*n` per frame, joined by commas, and drops tokens
whose pixels barely change from the previous frame (`video_compression_mask`). The LM is Qwen2
with plain 1D RoPE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from transformers import (
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

from tl_video.testing.tiny_checkpoint import LMOptions, chat_tokenizer, lm_options, save_checkpoint, text_config

# ChatML as in the Qwen2.5-based VideoLLaMA3 checkpoints; the video placeholder precedes the text.
VIDEOLLAMA3_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|image_pad|>\n"
    "{% elif content['type'] == 'video' %}<|video_pad|>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
EXTRA_TOKENS = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def save_tiny_videollama3(
    folder: str | Path,
    *,
    seed: int = 0,
    patch_size: int = 6,
    min_pixels: int = 12 * 12,
    max_pixels: int = 16 * 48 * 48,
    use_token_compression: bool = True,
    with_chat_template: bool = True,
    **lm: Unpack[LMOptions],
) -> Path:
    """Build, randomly initialise and `save_pretrained` a tiny VideoLLaMA3 model + processor.

    Frames are resized to multiples of 2 * patch_size = 12 pixels; `max_pixels` is a budget for
    the whole clip (each frame gets max_pixels / T). A [4, 40, 48, 3] video becomes 4 frames of a
    6x8 patch grid, downsampled to 3x4: 12 tokens per frame, 48 in all before compression (a random
    video keeps them all; a frozen one keeps 12 + 3 * 1). `lm` sets the Qwen2 LM shape
    (`LMOptions`; Qwen2 reads an explicit `head_dim`).
    """
    tokenizer, template = chat_tokenizer(SPECIAL_TOKENS, EXTRA_TOKENS, VIDEOLLAMA3_TEMPLATE, with_chat_template)
    options = lm_options(lm)
    text = text_config(
        tokenizer, options, model_type="qwen2", rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        rms_norm_eps=1e-6, use_sliding_window=False,
    )
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": patch_size,
        "hidden_act": "gelu_pytorch_tanh",
    }
    config = VideoLlama3Config(
        text_config=text,
        vision_config=vision_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        tie_word_embeddings=options["tie_word_embeddings"],
    )
    processor = VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels // 4}, patch_size=patch_size, merge_size=1
        ),
        tokenizer=tokenizer,
        video_processor=VideoLlama3VideoProcessor(
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
            patch_size=patch_size,
            merge_size=2,
            use_token_compression=use_token_compression,
        ),
        chat_template=template,
    )
    return save_checkpoint(folder, VideoLlama3ForConditionalGeneration, config, processor, seed=seed)
