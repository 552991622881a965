"""Parity for PLLaVA-pooled LLaVA-NeXT "Video-FT" checkpoints, which have no HF video path.

Oracle, built from the raw inputs only (the frames array and the prompt as a PLLaVA user writes
it, `USER: <image>\n... ASSISTANT:`): HF's `CLIPImageProcessor` on every frame, PLLaVA's recipe
written out here (`pllava_recipe_features`: CLIP layer -2 without CLS -> projector -> adaptive 3D
average pool) on the HF modules, and the HF `LlavaForConditionalGeneration` (loaded on its own)
run on `inputs_embeds` into which those features are spliced at the `<image>` rows of input ids
built by hand. `pllava_reference_video_features` (tl_video.testing) is checked against it too.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from torch import nn
from transformers import CLIPImageProcessor, LlavaForConditionalGeneration

import tl_video
from tests.conftest import random_video
from tests.oracles import max_diff, reference_model, reference_processor
from tests.parity import PROMPT, assert_greedy_matches_hf, assert_matches_hf
from tl_video.loading import CheckpointError
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import pllava_reference_video_features, save_tiny_pllava

# The same prompt as a PLLaVA user writes it (Vicuna-v1 conversation, video as <image>).
PLLAVA_TEXT = f"<s>USER: <image>\n{PROMPT} ASSISTANT:"
# name -> builder options. "default" pools the 4 frames x 4x4 grid to [4, 2, 2] (the processor's own
# count); "overlapping" pools to [3, 3, 3] (adaptive windows overlap in time and space, and the
# placeholder count differs from the processor's); "time_halved" pools 4 frames to 2; "wide_heads" has
# 4 heads of 32 over a 64-wide residual.
VARIANTS = {
    "default": {},
    "overlapping": {"pooling_shape": (3, 3, 3)},
    "time_halved": {"pooling_shape": (2, 2, 2)},
    "wide_heads": {"head_dim": 32},  # Vicuna (Llama) with an explicit head_dim: heads x head_dim = 2 x hidden size
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("pllava")
    return {name: save_tiny_pllava(root / name, **options) for name, options in VARIANTS.items()}


def load_pair(folder):
    """(ours, HF LlavaForConditionalGeneration loaded on its own, HF's tokenizer of the folder)."""
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    hf = reference_model(folder, hf_class=LlavaForConditionalGeneration)
    return model, hf, reference_processor(folder).tokenizer


def clip_pixels(hf, frames) -> torch.Tensor:
    """[1, T, 3, S, S]: HF's CLIP image processor (resize shortest edge, centre crop, CLIP mean/std) per frame."""
    side = hf.config.vision_config.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return processor(images=list(frames.copy()), return_tensors="pt")["pixel_values"][None]


@torch.no_grad()
def pllava_recipe_features(hf, pixels: torch.Tensor) -> torch.Tensor:
    """[T' * h' * w', d_model]: PLLaVA's video path (PllavaMultiModalProjector) on the HF modules."""
    frames = pixels.shape[1]
    hidden = hf.model.vision_tower(pixels[0], output_hidden_states=True).hidden_states[hf.config.vision_feature_layer]
    projected = hf.model.multi_modal_projector(hidden[:, 1:])  # CLS dropped; project, then pool
    side = math.isqrt(projected.shape[1])
    video = projected.reshape(frames, side, side, -1).permute(3, 0, 1, 2)[None]  # [1, d, T, h, w]
    pooled = nn.functional.adaptive_avg_pool3d(video, tuple(hf.config.pooling_shape))
    return pooled[0].permute(1, 2, 3, 0).reshape(-1, projected.shape[-1])  # (t, h, w) order


def reference_ids(tokenizer, text: str, image_token_id: int, n_video: int) -> torch.Tensor:
    """The prompt's ids with its single `<image>` expanded to n_video copies, built by hand."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    at = torch.nonzero(ids == image_token_id).flatten()
    assert at.numel() == 1, "the rendered prompt must hold <image> once"
    at = int(at)
    return torch.cat([ids[:at], torch.full((n_video,), image_token_id), ids[at + 1 :]])


def spliced_inputs(hf, tokenizer, frames):
    """(ids, oracle video features, HF inputs_embeds with the features scattered into the <image> rows)."""
    features = pllava_recipe_features(hf, clip_pixels(hf, frames))
    ids = reference_ids(tokenizer, PLLAVA_TEXT, hf.config.image_token_id, features.shape[0])
    with torch.no_grad():
        embeds = hf.get_input_embeddings()(ids)[None]
        mask = (ids == hf.config.image_token_id)[None, :, None].expand_as(embeds)
        embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
    return ids, features, embeds


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_residuals_and_patterns_match_hf(checkpoints, variant):
    model, hf, tokenizer = load_pair(checkpoints[variant])
    frames = random_video(21)
    ids, _, embeds = spliced_inputs(hf, tokenizer, frames)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    text = ids != hf.config.image_token_id
    assert prepared.tokens.shape[1] == ids.shape[0]
    assert torch.equal(prepared.tokens[0, text], ids[text]), "text tokens differ from the PLLaVA prompt's"
    assert_matches_hf(model, hf, prepared, {"inputs_embeds": embeds}, where=f"pllava {variant}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_video_tokens_equal_the_reference_features(checkpoints, variant):
    model, hf, tokenizer = load_pair(checkpoints[variant])
    frames = random_video(22)
    _, expected, _ = spliced_inputs(hf, tokenizer, frames)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    library_oracle = pllava_reference_video_features(hf, clip_pixels(hf, frames), hf.config.pooling_shape)[0]
    assert max_diff(library_oracle, expected) == 0.0
    _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
    assert expected.shape[0] == math.prod(hf.config.pooling_shape)
    assert max_diff(cache["hook_video_embed"][0], expected) == 0.0


def test_greedy_generation_matches_hf(checkpoints):
    model, hf, tokenizer = load_pair(checkpoints["overlapping"])
    frames = random_video(23)
    _, _, embeds = spliced_inputs(hf, tokenizer, frames)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    assert_greedy_matches_hf(model, hf, prepared, {"inputs_embeds": embeds})


@pytest.mark.parametrize("variant", ["default", "overlapping"])
def test_layout_matches_an_independent_reconstruction(checkpoints, variant):
    """Video rows, pooled-frame spans and (t, h, w) grid rebuilt from hand-expanded ids."""
    model, hf, _ = load_pair(checkpoints[variant])
    question, options = "Where did the red ball roll?", ["under the bed", "out the door"]
    prepared = model.prepare(video=random_video(24), prompt=multiple_choice_prompt(question, options, 1),
                             answer_prefix="Best option:(")
    assert "<image>" in prepared.text  # PLLaVA prompts carry the video as <image>
    t, h, w = hf.config.pooling_shape
    ids = reference_ids(model.processor.tokenizer, prepared.text, hf.config.image_token_id, t * h * w).tolist()
    video = [i for i, token in enumerate(ids) if token == hf.config.image_token_id]
    layout = prepared.layout
    assert layout.positions("video").tolist() == video
    assert layout.n_frames == t
    for frame in range(t):
        assert layout.positions(f"frame[{frame}]").tolist() == video[frame * h * w : (frame + 1) * h * w]
    assert list(layout.video_grid) == [(f, r, c) for f in range(t) for r in range(h) for c in range(w)]
    text_positions = [i for i in range(len(ids)) if i not in video]
    assert prepared.tokens[0, text_positions].tolist() == [ids[i] for i in text_positions]
    decode = lambda name: model.to_string(prepared.tokens[0, layout.positions(name)])  # noqa: E731
    assert decode("question_without_options") == question
    assert decode("true_option") == "(B) out the door"
    assert decode("false_options") == "(A) under the bed"
    assert decode("answer_prompt") == "Best option:("
    assert layout.positions("last").tolist() == [len(ids) - 1]


def test_plain_llava_without_pooling_shape_is_not_this_family(checkpoints, tmp_path):
    folder = shutil.copytree(checkpoints["default"], tmp_path / "plain_llava")
    config = json.loads((folder / "config.json").read_text())
    for key in ("pooling_shape", "pooling_method", "use_pooling", "frame_shape", "num_frames"):
        config.pop(key)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"without config.json keys \['pooling_shape'\].*Supported: .*"
                       r"LlavaForConditionalGeneration \(config.json with pooling_shape\).*LlavaNextVideo"):
        tl_video.HookedVideoTransformer.from_pretrained(folder)


def test_unsupported_pooling_options_are_refused(checkpoints, tmp_path):
    folder = shutil.copytree(checkpoints["default"], tmp_path / "max_pool")
    config = json.loads((folder / "config.json").read_text())
    config["pooling_method"] = "max"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="pooling_method 'max' is not supported"):
        tl_video.HookedVideoTransformer.from_pretrained(folder)
