"""Patching by layout group, logit lens and attention maps: checked against hand-written computations."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.patching import PatchingResult

from tl_video.interventions import (
    KnockoutSpec,
    answer_probability,
    logit_difference,
    mean_of,
    option_probabilities_by_layer,
    patch_frames,
    patch_groups,
    patch_video_tokens,
    stack_examples,
    video_attention_map,
    video_token_top_k,
)
from tl_video.prompts import multiple_choice_prompt
from tl_video.prompts.answers import option_token_ids
from tests.conftest import random_video

QUESTION = multiple_choice_prompt("Which way does it go?", ["left", "right", "up"], answer_index=2)


@pytest.fixture(scope="module")
def pair(model):
    frames = random_video(40)
    clean = model.prepare(video=frames, prompt=QUESTION, answer_prefix="Best option:(")
    corrupted = model.prepare(video=frames[::-1].copy(), prompt=QUESTION, answer_prefix="Best option:(")
    return clean, corrupted


@pytest.fixture(scope="module")
def options(model, pair):
    return option_token_ids(model.tokenizer, pair[0])


def hand_patch(model, corrupted, clean_cache, layer, positions):
    clean_value = clean_cache[f"blocks.{layer}.hook_resid_pre"][:, positions]

    def patch(resid, hook):
        resid = resid.clone()
        resid[:, positions] = clean_value
        return resid

    with torch.no_grad():
        return model.run_with_hooks(corrupted.tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", patch)])


def test_patch_frames_equals_hand_written_patches(model, pair, options):
    clean, corrupted = pair
    _, clean_cache = model.run_with_cache(clean.tokens)
    metric = logit_difference(options["C"], [options["A"], options["B"]])
    table = patch_frames(model, clean, corrupted, clean_cache, mean_of(metric))
    assert table.shape == (model.cfg.n_layers, clean.layout.n_frames)
    for layer, frame in [(0, 0), (1, 3)]:
        expected = metric(hand_patch(model, corrupted, clean_cache, layer, clean.layout.positions(f"frame[{frame}]")))
        assert torch.isclose(table[layer, frame], expected[0], atol=1e-5)


def test_patching_clean_into_clean_is_the_identity(model, pair, options):
    """Exact, when the cache comes from the same (fused) kernel as the patched runs: caching a
    pattern switches attention to the eager path, whose values differ at ~1e-7."""
    clean, _ = pair
    _, clean_cache = model.run_with_cache(clean.tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))
    metric = mean_of(answer_probability(options["A"]))
    table = patch_groups(model, clean, clean, clean_cache, metric, ["video", "question", "last", "frame[1:3]"])
    with torch.no_grad():
        baseline = metric(model(clean.tokens))
    assert torch.equal(table, baseline.expand_as(table))


def test_per_example_statistics_through_patching_result(model, options):
    """Five different examples (videos, and their reversal as the corruption), so the values vary."""
    metric = answer_probability(options["B"])
    per_example = []
    for seed in range(50, 55):
        frames = random_video(seed)
        clean = model.prepare(video=frames, prompt=QUESTION, answer_prefix="Best option:(")
        corrupted = model.prepare(video=frames[::-1].copy(), prompt=QUESTION, answer_prefix="Best option:(")
        _, clean_cache = model.run_with_cache(clean.tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))
        per_example.append(patch_groups(model, clean, corrupted, clean_cache, metric, ["video", "last"], reduce="none"))
    assert all(isinstance(result, PatchingResult) for result in per_example)
    stacked = stack_examples(per_example)
    assert stacked.values.shape == (model.cfg.n_layers, 2, 5)
    for index, result in enumerate(per_example):
        assert torch.equal(stacked.values[..., index], result.values[..., 0])
    values = stacked.values.double()
    assert (values.std(-1) > 1e-4).all(), "the examples must differ in every cell for the interval to mean anything"
    mean = stacked.mean().double()
    assert torch.allclose(mean, values.mean(-1))
    low, high = (bound.double() for bound in stacked.bootstrap_ci(n_resamples=400))
    # A percentile bootstrap of the mean of varying values: strictly around the mean, within the data.
    assert (low < mean).all() and (mean < high).all()
    assert (low >= values.min(-1).values - 1e-9).all() and (high <= values.max(-1).values + 1e-9).all()
    stderr = stacked.stderr().double()
    assert torch.allclose(stderr, values.std(-1) / 5**0.5, rtol=1e-4)


def test_patch_video_tokens_fills_the_frame_grid(model, pair, options):
    clean, corrupted = pair
    _, clean_cache = model.run_with_cache(clean.tokens)
    metric = mean_of(answer_probability(options["C"]))
    table = patch_video_tokens(model, clean, corrupted, clean_cache, metric, layers=[1])
    assert table.shape == (1, 4, 2, 2)
    position = clean.layout.video_positions[clean.layout.video_grid.index((2, 1, 0))]
    expected = metric(hand_patch(model, corrupted, clean_cache, 1, torch.tensor([position])))
    assert torch.isclose(table[0, 2, 1, 0], expected, atol=1e-6)


def test_pairs_with_different_layouts_are_refused_before_any_forward(model, pair):
    clean, _ = pair
    shorter = model.prepare(video=random_video(41, frames=3), prompt=QUESTION, answer_prefix="Best option:(")
    calls = []
    model.hook_embed.add_hook(lambda x, hook: calls.append(1))
    try:
        with pytest.raises(ValueError, match="layouts differ"):
            patch_frames(model, clean, shorter, None, lambda logits: logits.sum())
    finally:
        model.reset_hooks()
    assert calls == []


def test_option_probabilities_final_layer_equals_the_model(model, pair, options):
    clean, _ = pair
    letters, by_layer = option_probabilities_by_layer(model, clean, options)
    assert letters == ["A", "B", "C"] and by_layer.shape == (model.cfg.n_layers, 3)
    with torch.no_grad():
        final = model(clean.tokens)[0, -1].softmax(-1)
    assert torch.allclose(by_layer[-1], final[[options[l] for l in letters]], atol=1e-6)
    _, unnormed = option_probabilities_by_layer(model, clean, options, apply_final_norm=False)
    assert not torch.allclose(unnormed, by_layer)


def test_video_token_lens_is_chunk_invariant_and_paper_compat_reads_layer_inputs(model, pair):
    clean, _ = pair
    small = video_token_top_k(model, clean, k=3, chunk_size=5)
    large = video_token_top_k(model, clean, k=3, chunk_size=10_000)
    assert small.top_ids.shape == (model.cfg.n_layers, 16, 3)
    assert torch.equal(small.top_ids, large.top_ids)
    compat = video_token_top_k(model, clean, k=1, paper_compat=True)
    _, cache = model.run_with_cache(clean.tokens, names_filter="hook_video_embed")
    expected = (cache["hook_video_embed"][0] @ model.W_E.T).argmax(-1)
    assert torch.equal(compat.top_ids[0, :, 0], expected)


def test_attention_map_matches_the_pattern_and_knockout_zeroes_it(model, pair):
    clean, _ = pair
    maps = video_attention_map(model, clean, "question", layers=[0, 1])
    assert maps.shape == (2, 4, 2, 2)
    _, cache = model.run_with_cache(clean.tokens, names_filter="blocks.1.attn.hook_pattern")
    pattern = cache["blocks.1.attn.hook_pattern"][0]
    queries, position = clean.layout.positions("question"), clean.layout.video_positions[5]
    frame, row, col = clean.layout.video_grid[5]
    assert torch.isclose(maps[1, frame, row, col], pattern[:, queries, position].mean(), atol=1e-6)
    blocked = video_attention_map(model, clean, "question", layers=[0], knockout=KnockoutSpec.of([("video", "question")], [0]))
    assert torch.equal(blocked, torch.zeros_like(blocked))
