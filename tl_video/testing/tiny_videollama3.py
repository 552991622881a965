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

import torch
from transformers import (
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

from tl_video.testing.random_init import widen_random_weights
from tl_video.testing.tokenizer import build_byte_tokenizer

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
    num_hidden_layers: int = 2,
    hidden_size: int = 64,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    patch_size: int = 6,
    min_pixels: int = 12 * 12,
    max_pixels: int = 16 * 48 * 48,
    use_token_compression: bool = True,
    tie_word_embeddings: bool = False,
    with_chat_template: bool = True,
) -> Path:
    """Build, randomly initialise and `save_pretrained` a tiny VideoLLaMA3 model + processor.

    Frames are resized to multiples of 2 * patch_size = 12 pixels; `max_pixels` is a budget for
    the whole clip (each frame gets max_pixels / T). A [4, 40, 48, 3] video becomes 4 frames of a
    6x8 patch grid, downsampled to 3x4: 12 tokens per frame, 48 in all before compression (a random
    video keeps them all; a frozen one keeps 12 + 3 * 1).
    """
    folder = Path(folder)
    template = VIDEOLLAMA3_TEMPLATE if with_chat_template else None
    tokenizer = build_byte_tokenizer(SPECIAL_TOKENS, EXTRA_TOKENS, chat_template=template)
    text_config = {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": patch_size,
        "hidden_act": "gelu_pytorch_tanh",
    }
    config = VideoLlama3Config(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        tie_word_embeddings=tie_word_embeddings,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = VideoLlama3ForConditionalGeneration(config).eval()
        widen_random_weights(model)
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
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
