"""Logit-lens read-outs at every layer against a hand computation from HF's hidden states.

The reference never touches our model: HF (loaded on its own) runs on the raw frames and prompt
through its own processor and chat template; its `hidden_states` and the raw weights (W_U, W_E, the
final RMSNorm) give every read-out by hand in float64 (tests/oracles.py). The video rows are where
HF's ids hold the video placeholder, not our layout. A 3-layer model, so first, middle and last
layer are all distinct cases.
"""

from __future__ import annotations

import pytest
import torch

import tl_video
from tests.conftest import random_video
from tests.oracles import (
    assert_same_prompt,
    assert_top_k_matches,
    hand_probabilities,
    hf_chat_inputs,
    hf_layer_streams,
    lens_weights,
    max_diff,
    paper_compat_rows,
    reference_model,
    reference_processor,
)
from tl_video.interventions import option_probabilities_by_layer, video_token_top_k
from tl_video.testing import save_tiny_llava_next_video

PROMPT = "Which way does it go? (A) left (B) right (C) up"
# Probabilities are compared in float32 against a float64 hand computation.
PROBABILITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = save_tiny_llava_next_video(tmp_path_factory.mktemp("lens") / "three_layers", num_hidden_layers=3)
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    hf, processor = reference_model(folder), reference_processor(folder)
    frames = random_video(40)
    inputs = hf_chat_inputs(processor, frames, PROMPT)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    assert_same_prompt(prepared.tokens, inputs["input_ids"], model.frontend.video_token_id)
    weights = lens_weights(hf)
    assert not torch.allclose(weights.norm_weight, torch.ones_like(weights.norm_weight)), "a trivial norm hides norm bugs"
    assert not torch.equal(weights.embed, weights.unembed), "tied matrices hide W_E/W_U mix-ups"
    streams = hf_layer_streams(hf, inputs)
    video_rows = inputs["input_ids"][0] == hf.config.video_token_id
    return model, prepared, weights, streams, video_rows


def test_the_hand_computation_reproduces_hf_output(setup):
    """Self-check of the oracle: its last-layer read-out is HF's own output distribution."""
    _, _, weights, streams, _ = setup
    hand = hand_probabilities(streams.layer_outputs[-1], weights, norm=True)
    through_final = hand_probabilities(streams.final_normed, weights, norm=False)
    assert max_diff(hand, through_final) <= PROBABILITY_ATOL


@pytest.mark.parametrize("apply_final_norm", [True, False])
def test_option_probabilities_match_the_hand_lens_at_every_layer(setup, apply_final_norm):
    model, prepared, weights, streams, _ = setup
    # Any vocabulary ids will do: the read-out is a full softmax, the ids only pick columns.
    options = {"A": 65, "B": 66, "C": 67, "x": 5, "y": model.cfg.d_vocab - 1}
    letters, by_layer = option_probabilities_by_layer(model, prepared, options, apply_final_norm=apply_final_norm)
    assert letters == list(options) and by_layer.shape == (3, len(options))
    for layer, residual in enumerate(streams.layer_outputs):
        expected = hand_probabilities(residual[-1], weights, norm=apply_final_norm)[list(options.values())]
        diff = max_diff(by_layer[layer], expected)
        assert diff <= PROBABILITY_ATOL, f"norm={apply_final_norm}, layer {layer}: differs by {diff:.2e}"


def test_paper_compatible_option_probabilities_end_in_the_model_output(setup):
    """Raw residual after layers 0 .. n-2, then HF's hidden_states[-1] (already final-normed)."""
    model, prepared, weights, streams, _ = setup
    options = {"A": 65, "B": 66, "C": 67}
    _, by_layer = option_probabilities_by_layer(model, prepared, options, paper_compat=True)
    rows = streams.layer_outputs[:-1] + [streams.final_normed]
    for layer, residual in enumerate(rows):
        expected = hand_probabilities(residual[-1], weights, norm=False)[list(options.values())]
        assert max_diff(by_layer[layer], expected) <= PROBABILITY_ATOL, f"paper_compat, layer {layer}"


@pytest.mark.parametrize("apply_final_norm", [True, False])
def test_video_token_top_k_matches_the_hand_lens_at_every_layer(setup, apply_final_norm):
    model, prepared, weights, streams, video_rows = setup
    lens = video_token_top_k(model, prepared, k=5, apply_final_norm=apply_final_norm, chunk_size=7)
    assert lens.top_ids.shape == (3, int(video_rows.sum()), 5)
    for layer, residual in enumerate(streams.layer_outputs):
        expected = hand_probabilities(residual[video_rows], weights, norm=apply_final_norm)
        assert_top_k_matches(lens.top_ids[layer], lens.top_probabilities[layer], expected,
                             atol=PROBABILITY_ATOL, where=f"norm={apply_final_norm}, layer {layer}")


def test_paper_compatible_video_lens_reads_layer_inputs_through_the_input_embedding(setup):
    """Inputs of layers 0 .. n-2 (layer 0: the projector output) then the final-normed output, times W_E."""
    model, prepared, weights, streams, video_rows = setup
    lens = video_token_top_k(model, prepared, k=5, paper_compat=True)
    for layer, residual in enumerate(paper_compat_rows(streams)):
        expected = hand_probabilities(residual[video_rows], weights, norm=False, matrix="embed")
        assert_top_k_matches(lens.top_ids[layer], lens.top_probabilities[layer], expected,
                             atol=PROBABILITY_ATOL, where=f"paper_compat, row {layer}")
