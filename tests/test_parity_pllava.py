"""Parity for PLLaVA-pooled LLaVA-NeXT "Video-FT" checkpoints, which have no HF video path.

Oracle: `pllava_reference_video_features` (PLLaVA's projector-then-adaptive-pool path on the HF
modules) for the video tokens, and the HF `LlavaForConditionalGeneration` run on `inputs_embeds`
into which those features are spliced at the `<image>` rows of independently built input ids.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

import tl_video
from tests.conftest import random_video
from tests.tolerances import LOGITS_FP32, PATTERN_FP32, RESIDUAL_FP32
from tl_video.loading import CheckpointError
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import pllava_reference_video_features, save_tiny_pllava

PROMPT = "What happens in the video?"
# name -> builder options. "default" pools the 4 frames x 4x4 grid to [4, 2, 2] (the processor's own
# count); "overlapping" pools to [3, 3, 3] (adaptive windows overlap in time and space, and the
# placeholder count differs from the processor's); "time_halved" pools 4 frames to 2.
VARIANTS = {
    "default": {},
    "overlapping": {"pooling_shape": (3, 3, 3)},
    "time_halved": {"pooling_shape": (2, 2, 2)},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("pllava")
    return {name: save_tiny_pllava(root / name, **options) for name, options in VARIANTS.items()}


def load_pair(folder, **kwargs):
    model = tl_video.HookedVideoTransformer.from_pretrained(folder, keep_hf_model=True, **kwargs)
    hf = model.hf_model[0]
    hf.set_attn_implementation("eager")
    return model, hf


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def reference_ids(tokenizer, text: str, image_token_id: int, n_video: int) -> torch.Tensor:
    """The prompt's ids with its single `<image>` expanded to n_video copies, built by hand."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    at = torch.nonzero(ids == image_token_id).flatten()
    assert at.numel() == 1, "the rendered prompt must hold <image> once"
    at = int(at)
    return torch.cat([ids[:at], torch.full((n_video,), image_token_id), ids[at + 1 :]])


def spliced_inputs(hf, processor, prepared):
    """(ids, oracle video features, HF inputs_embeds with the features scattered into the <image> rows)."""
    pixels = processor(text=prepared.text, videos=[prepared.frames], return_tensors="pt")["pixel_values_videos"]
    features = pllava_reference_video_features(hf, pixels, hf.config.pooling_shape)[0]
    ids = reference_ids(processor.tokenizer, prepared.text, hf.config.image_token_id, features.shape[0])
    with torch.no_grad():
        embeds = hf.get_input_embeddings()(ids)[None]
        mask = (ids == hf.config.image_token_id)[None, :, None].expand_as(embeds)
        embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
    return ids, features, embeds


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_residuals_and_patterns_match_hf(checkpoints, variant):
    model, hf = load_pair(checkpoints[variant])
    prepared = model.prepare(video=random_video(21), prompt=PROMPT)
    ids, _, embeds = spliced_inputs(hf, model.processor, prepared)
    assert prepared.tokens.shape[1] == ids.shape[0]
    with torch.no_grad():
        reference = hf(inputs_embeds=embeds, output_hidden_states=True, output_attentions=True)
        logits, cache = model.run_with_cache(prepared.tokens)

    assert max_diff(logits, reference.logits) <= LOGITS_FP32, f"{variant}: logits differ by {max_diff(logits, reference.logits):.2e}"
    for layer in range(model.cfg.n_layers):
        diff = max_diff(cache[f"blocks.{layer}.hook_resid_pre"], reference.hidden_states[layer])
        assert diff <= RESIDUAL_FP32, f"{variant}: resid_pre of layer {layer} differs by {diff:.2e}"
        diff = max_diff(cache[f"blocks.{layer}.attn.hook_pattern"], reference.attentions[layer])
        assert diff <= PATTERN_FP32, f"{variant}: pattern of layer {layer} differs by {diff:.2e}"
    final = model.ln_final(cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"])
    assert max_diff(final, reference.hidden_states[-1]) <= RESIDUAL_FP32


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_video_tokens_equal_the_reference_features(checkpoints, variant):
    model, hf = load_pair(checkpoints[variant])
    prepared = model.prepare(video=random_video(22), prompt=PROMPT)
    _, expected, _ = spliced_inputs(hf, model.processor, prepared)
    _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
    assert expected.shape[0] == math.prod(hf.config.pooling_shape)
    assert max_diff(cache["hook_video_embed"][0], expected) == 0.0


def test_greedy_generation_matches_hf(checkpoints):
    model, hf = load_pair(checkpoints["overlapping"])
    prepared = model.prepare(video=random_video(23), prompt=PROMPT)
    _, _, embeds = spliced_inputs(hf, model.processor, prepared)
    with torch.no_grad():
        expected = hf.generate(inputs_embeds=embeds, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    ours = model.generate(prepared.tokens, max_new_tokens=8, stop_at_eos=False)
    assert ours[0, prepared.tokens.shape[1]:].tolist() == expected[0, -8:].tolist()


@pytest.mark.parametrize("variant", ["default", "overlapping"])
def test_layout_matches_an_independent_reconstruction(checkpoints, variant):
    """Video rows, pooled-frame spans and (t, h, w) grid rebuilt from hand-expanded ids."""
    model, hf = load_pair(checkpoints[variant])
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
