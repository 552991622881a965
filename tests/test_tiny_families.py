"""Every tiny family checkpoint saves, reloads through the user's `from_pretrained` path and runs.

For each family: the processor expands the video placeholder into exactly as many tokens as the
family's projected video features have rows (the count every front end relies on), and a forward
on a random 4-frame video gives finite logits of order 1. See docs/families.md for the layouts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

from tl_video.testing.tiny_internvl import save_tiny_internvl
from tl_video.testing.tiny_llava_next_video import save_tiny_llava_next_video
from tl_video.testing.tiny_llava_onevision import save_tiny_llava_onevision
from tl_video.testing.tiny_pllava import PLLAVA_CONFIG_KEYS, pllava_reference_video_features, save_tiny_pllava
from tl_video.testing.tiny_qwen2_5_vl import save_tiny_qwen2_5_vl
from tl_video.testing.tiny_qwen3_vl import save_tiny_qwen3_vl
from tl_video.testing.tiny_videollama3 import save_tiny_videollama3
from tests.conftest import random_video

NUM_FRAMES = 4
MESSAGES = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
# Logits of a widened random model: their spread should be O(1), far from 0 and from blow-up.
LOGIT_STD_RANGE = (0.3, 3.0)


def _projected_video_rows(model, inputs) -> torch.Tensor:
    """`get_video_features(...).pooler_output` concatenated in placeholder order, `[n_tokens, d_model]`."""
    return torch.cat(list(model.get_video_features(**_video_kwargs(inputs)).pooler_output)).flatten(0, -2)


def _video_kwargs(inputs) -> dict:
    names = ("pixel_values_videos", "video_grid_thw", "video_merge_sizes")
    return {name: inputs[name] for name in names if name in inputs}


def _internvl_rows(model, inputs) -> torch.Tensor:
    # Frames are images: `pixel_values` [T, 3, H, W] -> pooler_output [T, n_per_frame, d_model].
    return model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output.flatten(0, 1)


def _videollama3_rows(model, inputs) -> torch.Tensor:
    # The processor drops near-static tokens; the model applies the same mask to the features.
    return _projected_video_rows(model, inputs)[inputs["video_compression_mask"]]


def _pllava_rows(model, inputs) -> torch.Tensor:
    return pllava_reference_video_features(model, inputs["pixel_values_videos"], model.config.pooling_shape)[0]


@dataclass(frozen=True)
class Family:
    save: Callable
    placeholder_id: Callable  # config -> id of the token that video features replace
    video_rows: Callable  # (model, processor inputs) -> [n_tokens, d_model]


FAMILIES = {
    "llava_next_video": Family(save_tiny_llava_next_video, lambda c: c.video_token_id, _projected_video_rows),
    "llava_onevision": Family(save_tiny_llava_onevision, lambda c: c.video_token_id, _projected_video_rows),
    "pllava": Family(save_tiny_pllava, lambda c: c.image_token_id, _pllava_rows),
    "qwen2_5_vl": Family(save_tiny_qwen2_5_vl, lambda c: c.video_token_id, _projected_video_rows),
    "qwen3_vl": Family(save_tiny_qwen3_vl, lambda c: c.video_token_id, _projected_video_rows),
    "internvl": Family(save_tiny_internvl, lambda c: c.image_token_id, _internvl_rows),
    "videollama3": Family(save_tiny_videollama3, lambda c: c.video_token_id, _videollama3_rows),
}


def _load(name: str, tmp_path):
    folder = FAMILIES[name].save(tmp_path / name)
    return AutoProcessor.from_pretrained(folder), AutoModelForImageTextToText.from_pretrained(folder).eval()


def _prepare(processor, video: np.ndarray):
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    return processor(text=prompt, videos=[video], return_tensors="pt")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_tiny_family_round_trip(name, tmp_path):
    processor, model = _load(name, tmp_path)
    family = FAMILIES[name]
    inputs = _prepare(processor, random_video(0, frames=NUM_FRAMES))
    input_ids = inputs["input_ids"]
    n_placeholders = int((input_ids == family.placeholder_id(model.config)).sum())

    with torch.no_grad():
        rows = family.video_rows(model, inputs)
        if name == "pllava":  # no HF video path: splice the reference features in ourselves
            embeds = model.get_input_embeddings()(input_ids)
            mask = (input_ids == model.config.image_token_id)[..., None]
            embeds = embeds.masked_scatter(mask, rows)
            logits = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
        else:
            logits = model(**inputs).logits

    assert 0 < n_placeholders <= 80, f"{name}: {n_placeholders} video tokens for 4 frames"
    assert rows.shape == (n_placeholders, model.config.text_config.hidden_size), (
        f"{name}: {n_placeholders} placeholders but features of shape {tuple(rows.shape)}"
    )
    assert logits.shape == (1, input_ids.shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all(), f"{name}: non-finite logits"
    low, high = LOGIT_STD_RANGE
    assert low < logits.std().item() < high, f"{name}: logit std {logits.std().item():.3g} not O(1)"


def test_qwen3_vl_deepstack_features_cover_every_video_token(tmp_path):
    processor, model = _load("qwen3_vl", tmp_path)
    inputs = _prepare(processor, random_video(0, frames=NUM_FRAMES))
    n_placeholders = int((inputs["input_ids"] == model.config.video_token_id).sum())
    with torch.no_grad():
        deepstack = model.get_video_features(**_video_kwargs(inputs)).deepstack_features
    assert len(deepstack) == 3, "one feature set per LM layer 0, 1, 2"
    assert all(torch.cat(list(layer)).shape[0] == n_placeholders for layer in deepstack)


def test_videollama3_frozen_video_keeps_first_frame_and_one_token_per_later_frame(tmp_path):
    processor, model = _load("videollama3", tmp_path)
    frozen = np.repeat(random_video(0, frames=1), NUM_FRAMES, axis=0)
    inputs = _prepare(processor, frozen)
    per_frame = int(inputs["video_grid_thw"][0, 1:].prod()) // int(inputs["video_merge_sizes"][0]) ** 2
    n_placeholders = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert n_placeholders == per_frame + (NUM_FRAMES - 1)
    with torch.no_grad():
        assert _videollama3_rows(model, inputs).shape[0] == n_placeholders


def test_pllava_checkpoint_has_the_video_ft_layout(tmp_path):
    folder = save_tiny_pllava(tmp_path / "pllava")
    config = json.loads((folder / "config.json").read_text())
    with safe_open(folder / "model.safetensors", "pt") as weights:
        prefixes = {".".join(key.split(".")[:2]) for key in weights.keys()}
    assert config["model_type"] == "llava"
    assert set(PLLAVA_CONFIG_KEYS) <= set(config)
    assert prefixes == {
        "vision_tower.vision_model",
        "multi_modal_projector.linear_1",
        "multi_modal_projector.linear_2",
        "language_model.model",
        "language_model.lm_head",
    }
