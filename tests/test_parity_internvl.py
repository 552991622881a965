"""Parity with the HF InternVL3 model on the same video input (frames encoded as images).

InternVL has no video path: the processor turns `<video>` into `Frame{i}: <img><IMG_CONTEXT>*16</img>`
per frame and the model fills the `<IMG_CONTEXT>` rows with `get_image_features(pixel_values)`.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import random_video
from tests.oracles import max_diff, reference_model
from tests.parity import (
    assert_greedy_matches_hf, assert_half_precision_matches_hf, assert_matches_hf, load_pair, prepare_with_reference,
)
from tests.tolerances import EXACT
from tl_video.frontend.internvl import pixel_shuffle
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_internvl
from tl_video.video import reverse

# name -> builder options; each a real saved InternVL checkpoint.
VARIANTS = {
    "qwen2": {},  # InternVL3: Qwen2.5 LM, q/k/v biases, untied
    "qwen2_tied_layer_-2": {"tie_word_embeddings": True, "vision_feature_layer": -2},
    "qwen3_bias": {"text_model_type": "qwen3", "attention_bias": True},  # InternVL3.5: q/k norm
    # InternVL3.5-1B/4B (Qwen3-0.6B/4B LMs): tied, heads x head_dim = 2 x hidden size
    "qwen3_wide_heads_tied": {"text_model_type": "qwen3", "head_dim": 32, "tie_word_embeddings": True},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("internvl")
    return {name: save_tiny_internvl(root / name, **options) for name, options in VARIANTS.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_residuals_and_patterns_match_hf(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    prepared, processed = prepare_with_reference(model, processor, random_video(1))
    assert_matches_hf(model, hf, prepared, processed, where=f"internvl {variant}")


@pytest.mark.parametrize("variant", ["qwen2", "qwen2_tied_layer_-2"])
def test_video_tokens_equal_what_hf_splices_in(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    prepared, processed = prepare_with_reference(model, processor, random_video(2))
    with torch.no_grad():
        image_features = hf.get_image_features(pixel_values=processed["pixel_values"]).pooler_output
        spliced = hf(**processed, output_hidden_states=True).hidden_states[0][0]  # inputs_embeds after the scatter
        _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
    ours = cache["hook_video_embed"][0]
    placeholders = processed["input_ids"][0] == hf.config.image_token_id
    assert image_features.shape[:2] == (4, 16)
    assert max_diff(ours, image_features.flatten(0, 1)) == EXACT
    assert max_diff(ours, spliced[placeholders]) == EXACT


def test_pixel_shuffle_matches_hf(checkpoints):
    hf = reference_model(checkpoints["qwen2"])
    features = torch.randn(3, 8, 8, 5)
    expected = hf.model.pixel_shuffle(features, scale_factor=0.5)
    assert torch.equal(pixel_shuffle(features, 2), expected)
    # Output (i, j) holds patches (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1) in that order.
    block = torch.cat([features[0, 2, 4], features[0, 2, 5], features[0, 3, 4], features[0, 3, 5]])
    assert torch.equal(pixel_shuffle(features, 2)[0, 1, 2], block)


@pytest.mark.parametrize("variant", ["qwen2", "qwen3_bias"])
def test_greedy_generation_matches_hf(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    assert_greedy_matches_hf(model, hf, *prepare_with_reference(model, processor, random_video(4)))


def test_layout_matches_an_independent_reconstruction(checkpoints):
    """Frames are the `<img>...</img>` runs of the processor's ids; `Frame{i}: ` text sits between them."""
    model, hf, processor = load_pair(checkpoints["qwen2"])
    question, options = "Which way does the ball roll?", ["left", "right", "it stays"]
    frames = random_video(5)
    prepared = model.prepare(video=frames, prompt=multiple_choice_prompt(question, options, 2),
                             answer_prefix="Best option:(")
    ids = processor(text=prepared.text, videos=[frames], return_tensors="pt")["input_ids"][0].tolist()
    tokenizer = model.tokenizer
    start_id, end_id = tokenizer.convert_tokens_to_ids("<img>"), tokenizer.convert_tokens_to_ids("</img>")
    starts = [i for i, token in enumerate(ids) if token == start_id]
    ends = [i for i, token in enumerate(ids) if token == end_id]
    frames = [list(range(s + 1, e)) for s, e in zip(starts, ends)]
    layout = prepared.layout

    assert len(frames) == 4 and all(len(frame) == 16 for frame in frames)
    assert all(ids[p] == hf.config.image_token_id for frame in frames for p in frame)
    assert list(layout.video_positions) == [p for frame in frames for p in frame]
    for index, frame in enumerate(frames):
        assert layout.positions(f"frame[{index}]").tolist() == frame
        label = tokenizer.encode(f"Frame{index + 1}: ", add_special_tokens=False)
        assert ids[frame[0] - 1 - len(label) : frame[0] - 1] == label, f"no 'Frame{index + 1}: ' before frame {index}"
    assert list(layout.video_grid) == [(f, r, c) for f in range(4) for r in range(4) for c in range(4)]
    decode = lambda name: model.to_string(prepared.tokens[0, layout.positions(name)])  # noqa: E731
    assert decode("question_without_options") == question
    assert [decode(f"option[{letter}]") for letter in "ABC"] == ["(A) left", "(B) right", "(C) it stays"]
    assert decode("true_option") == "(C) it stays"
    assert decode("answer_prompt") == "Best option:("
    # A reversed video keeps the layout (same count of tokens per frame), so patching can pair them.
    reverse_prepared = model.prepare(video=reverse(prepared.frames), prompt=multiple_choice_prompt(question, options, 2),
                                     answer_prefix="Best option:(")
    reverse_prepared.layout.check_same_as(layout)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_as_close_to_hf_float32_as_hf_itself(checkpoints, dtype):
    videos = {f"video seed {seed}": random_video(seed) for seed in (6, 7)}
    assert_half_precision_matches_hf(checkpoints["qwen2"], dtype, videos)
