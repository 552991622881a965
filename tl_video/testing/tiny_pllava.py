"""A tiny random PLLaVA-format ("Video-FT") LLaVA-NeXT checkpoint, plus the reference video path.

The information-flow paper's LLaVA-NeXT-7B/13B-Video-FT checkpoints are PLLaVA checkpoints: a
`model_type: "llava"` config.json with the extra keys `pooling_shape`, `use_pooling`,
`frame_shape`, `num_frames` (and `pooling_method`), and weights laid out as transformers-4.x LLaVA's
(`vision_tower.vision_model.*`, `multi_modal_projector.linear_1/linear_2`, `language_model.model.*`,
`language_model.lm_head`; no `image_newline`). transformers has no video path for them, so this module saves a
`LlavaForConditionalGeneration` checkpoint with those keys, and `pllava_reference_video_features`
implements the PLLaVA video path from its specification (PLLaVA `PllavaMultiModalProjector`):

1. every frame through the CLIP tower; take `hidden_states[vision_feature_layer]` (-2) and drop
   the CLS token (`vision_feature_select_strategy == "default"`);
2. the projector, linear_1 -> GELU -> linear_2, on every patch (projection comes *before* pooling,
   unlike LLaVA-NeXT-Video, which pools first);
3. rearrange to (batch, d_model, T, h, w) and `adaptive_avg_pool3d(pooling_shape)`;
4. flatten in (t, h, w) order: the token of pooled frame t, row i, column j is at
   t * ph * pw + i * pw + j.

The saved processor is a `LlavaNextVideoProcessor` whose video token is `<image>` (the
`image_token_index` of the checkpoint, as in PLLaVA prompts `USER: <image>\\n...`): it resizes and
centre-crops each frame like CLIP and expands `<image>` into T * (g/2)^2 copies, which equals the
pooled token count when `pooling_shape == [T, g/2, g/2]` (the default, as 24 -> 12 in the real
checkpoints). For any other pooling shape a front end must expand the placeholder itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextVideoProcessor,
    LlavaNextVideoVideoProcessor,
)

from tl_video.testing.tiny_checkpoint import (
    TINY_LM, LMOptions, chat_tokenizer, lm_options, save_checkpoint, text_config,
)

# Vicuna-v1 conversation as PLLaVA writes it (`conv_eval_videoqabench` style): the video is `<image>`.
PLLAVA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] if message['content'] is string "
    "else message['content'][0]['text'] }}{{ ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] in ('video', 'image') %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ ' ' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}

# PLLaVA feeds a still image as a 1-frame video through `<image>`, so the processor's separate image
# path is unused; `LlavaNextVideoProcessor` still needs an image token distinct from its video token.
UNUSED_IMAGE_TOKEN = "<unused_image>"

#: The config.json keys PLLaVA adds to a LLaVA config.
PLLAVA_CONFIG_KEYS = ("pooling_method", "pooling_shape", "use_pooling", "frame_shape", "num_frames")


def save_tiny_pllava(
    folder: str | Path,
    *,
    seed: int = 0,
    num_frames: int = 4,
    pooling_shape: tuple[int, int, int] | None = None,
    image_size: int = 32,
    patch_size: int = 8,
    with_chat_template: bool = True,
    **lm: Unpack[LMOptions],
) -> Path:
    """Build, randomly initialise and `save_pretrained` a tiny PLLaVA-format checkpoint + processor.

    With the defaults each frame is a 4x4 CLIP grid (plus CLS) and `pooling_shape` is
    [num_frames, 2, 2], so 4 frames give 4 * 2 * 2 = 16 video tokens. The CLIP tower has 2 layers,
    so layer -2 is the output of its first layer and the last layer is unused, as in the real model.
    `lm` sets the Vicuna (Llama) LM shape (`LMOptions`; as many key/value heads as heads unless
    given; Llama reads an explicit `head_dim`).
    """
    grid = image_size // patch_size
    pooling_shape = list(pooling_shape) if pooling_shape is not None else [num_frames, grid // 2, grid // 2]
    tokenizer, template = chat_tokenizer(SPECIAL_TOKENS, ["<image>", UNUSED_IMAGE_TOKEN], PLLAVA_TEMPLATE, with_chat_template)
    options = lm_options(lm, num_key_value_heads=lm.get("num_attention_heads", TINY_LM["num_attention_heads"]))
    text = text_config(
        tokenizer, options, bos=True, model_type="llama", rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=grid * grid,
        tie_word_embeddings=options["tie_word_embeddings"],
        pooling_method="avg",
        pooling_shape=pooling_shape,
        use_pooling=True,
        frame_shape=[grid, grid],
        num_frames=num_frames,
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
        video_token="<image>",
        image_token=UNUSED_IMAGE_TOKEN,
    )
    folder = save_checkpoint(folder, LlavaForConditionalGeneration, config, processor, seed=seed)
    _use_llava_hf_vision_keys(folder / "model.safetensors")
    return folder


def _use_llava_hf_vision_keys(weights_file: Path) -> None:
    """Rename `vision_tower.*` to `vision_tower.vision_model.*`, the layout of the real checkpoints.

    transformers 5.24 saves the flattened CLIP module names; llava-hf and PLLaVA checkpoints (saved
    with transformers 4.x) nest the CLIP weights under `vision_model`. HF loads both.
    """
    state_dict = load_file(weights_file)
    renamed = {
        key.replace("vision_tower.", "vision_tower.vision_model.", 1) if key.startswith("vision_tower.") else key: value
        for key, value in state_dict.items()
    }
    save_file(renamed, weights_file, metadata={"format": "pt"})


@torch.no_grad()
def pllava_reference_video_features(
    hf_model: nn.Module, pixel_values_videos: torch.Tensor, pooling_shape: tuple[int, int, int] | list[int]
) -> torch.Tensor:
    """PLLaVA's projected video tokens, computed with the HF LLaVA modules: the parity oracle.

    Args:
        hf_model: a `LlavaForConditionalGeneration` (or its `.model`, a `LlavaModel`) loaded from
            a PLLaVA-format checkpoint.
        pixel_values_videos: `[batch, T, 3, H, W]` CLIP-normalised frames, as the saved
            `LlavaNextVideoProcessor` returns them.
        pooling_shape: `(T', h', w')`, the `adaptive_avg_pool3d` output size (`config.pooling_shape`).

    Returns:
        `[batch, T' * h' * w', d_model]`, tokens in (t, h, w) order.
    """
    llava = getattr(hf_model, "model", hf_model)
    config = llava.config
    batch, frames = pixel_values_videos.shape[:2]
    pixels = pixel_values_videos.flatten(0, 1).to(llava.vision_tower.dtype)
    hidden_states = llava.vision_tower(pixels, output_hidden_states=True).hidden_states
    patches = hidden_states[config.vision_feature_layer]
    if config.vision_feature_select_strategy == "default":
        patches = patches[:, 1:]
    projected = llava.multi_modal_projector(patches)  # [batch * T, h * w, d_model]
    grid_h = grid_w = int(round(projected.shape[1] ** 0.5))
    if grid_h * grid_w != projected.shape[1]:
        raise ValueError(f"PLLaVA expects a square patch grid per frame, got {projected.shape[1]} patches")
    video = projected.view(batch, frames, grid_h, grid_w, -1).permute(0, 4, 1, 2, 3)  # b d t h w
    pooled = nn.functional.adaptive_avg_pool3d(video, tuple(pooling_shape))
    return pooled.permute(0, 2, 3, 4, 1).flatten(1, 3)  # b (t h w) d
