"""TransformerLens 4.3's own tools run unchanged on HookedVideoTransformer, on video inputs."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache, patching
from transformer_lens.tools.analysis import attribution_patch, direct_logit_attribution, logit_lens

from tests.conftest import random_video
from tests.tolerances import DECOMPOSITION_FP32, LOGITS_FP32

PROMPT = "Which way does it move?"


@pytest.fixture(scope="module")
def clean_and_corrupted(model):
    """The same prompt over a video and over the video reversed: identical layouts."""
    frames = random_video(10)
    clean = model.prepare(video=frames, prompt=PROMPT, answer_prefix=" (")
    corrupted = model.prepare(video=frames[::-1].copy(), prompt=PROMPT, answer_prefix=" (")
    clean.layout.check_same_as(corrupted.layout)
    return clean, corrupted


@pytest.fixture(scope="module")
def answer_token(model, clean_and_corrupted):
    clean, _ = clean_and_corrupted
    with torch.no_grad():
        return int(model(clean.tokens)[0, -1].argmax())


def logit_metric(token: int):
    return lambda logits: logits[0, -1, token]


def test_run_with_cache_returns_activation_cache(model, clean_and_corrupted):
    clean, _ = clean_and_corrupted
    logits, cache = model.run_with_cache(clean.tokens)
    assert isinstance(cache, ActivationCache)
    n = clean.tokens.shape[1]
    assert cache["blocks.1.attn.hook_pattern"].shape == (1, model.cfg.n_heads, n, n)
    assert cache["pattern", 1].shape == cache["blocks.1.attn.hook_pattern"].shape
    assert cache["hook_video_embed"].shape == (1, len(clean.layout.video_positions), model.cfg.d_model)


def test_names_filter_caches_only_what_was_asked(model, clean_and_corrupted):
    clean, _ = clean_and_corrupted
    _, cache = model.run_with_cache(clean.tokens, names_filter=lambda name: name.endswith("hook_resid_post"))
    assert sorted(cache.keys()) == [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]


def test_accumulated_and_decomposed_residual_sum_to_final(model, clean_and_corrupted):
    clean, _ = clean_and_corrupted
    _, cache = model.run_with_cache(clean.tokens)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    accumulated = cache.accumulated_resid()
    assert accumulated.shape[0] == model.cfg.n_layers + 1
    assert (accumulated[-1] - final).abs().max() <= DECOMPOSITION_FP32
    decomposed = cache.decompose_resid()
    assert (decomposed.sum(0) - final).abs().max() <= DECOMPOSITION_FP32
    full = cache.get_full_resid_decomposition(expand_neurons=False)
    assert (full.sum(0) - final).abs().max() <= DECOMPOSITION_FP32


def test_logit_attrs_sum_to_the_logit(model, clean_and_corrupted, answer_token):
    clean, _ = clean_and_corrupted
    logits, cache = model.run_with_cache(clean.tokens)
    components = cache.decompose_resid(pos_slice=-1)
    attrs = cache.logit_attrs(components, tokens=torch.tensor([answer_token]), pos_slice=-1)
    assert abs(attrs.sum().item() - logits[0, -1, answer_token].item()) <= LOGITS_FP32 * 10


def test_stack_head_results_sum_to_attention_outputs(model, clean_and_corrupted):
    clean, _ = clean_and_corrupted
    _, cache = model.run_with_cache(clean.tokens)
    heads = cache.stack_head_results(layer=1)
    total_attn = cache["blocks.0.hook_attn_out"]
    assert heads.shape[0] == model.cfg.n_heads
    assert (heads.sum(0) - total_attn).abs().max() <= DECOMPOSITION_FP32


def test_resid_pre_patching_equals_a_hand_written_patch(model, clean_and_corrupted, answer_token):
    clean, corrupted = clean_and_corrupted
    _, clean_cache = model.run_with_cache(clean.tokens)
    metric = logit_metric(answer_token)
    result = patching.get_act_patch_resid_pre(model, corrupted.tokens, clean_cache, metric)
    n = clean.tokens.shape[1]
    assert result.shape == (model.cfg.n_layers, n)
    frame_1 = clean.layout.positions("frame[1]").tolist()
    for layer, position in [(0, frame_1[0]), (1, frame_1[-1]), (1, n - 1)]:
        clean_value = clean_cache[f"blocks.{layer}.hook_resid_pre"][:, position]

        def patch(resid, hook):
            resid = resid.clone()
            resid[:, position] = clean_value
            return resid

        with torch.no_grad():
            by_hand = model.run_with_hooks(corrupted.tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", patch)])
        assert torch.isclose(result[layer, position], metric(by_hand), atol=1e-5)
    # Patching the clean run into itself changes nothing (the identity).
    identity = patching.get_act_patch_resid_pre(model, clean.tokens, clean_cache, metric)
    with torch.no_grad():
        baseline = metric(model(clean.tokens))
    assert torch.allclose(identity, baseline.expand_as(identity), atol=0)


def test_head_patching_block_every_and_generic_patch(model, clean_and_corrupted, answer_token):
    clean, corrupted = clean_and_corrupted
    _, clean_cache = model.run_with_cache(clean.tokens)
    metric = logit_metric(answer_token)
    by_pos = patching.get_act_patch_attn_head_out_by_pos(model, corrupted.tokens, clean_cache, metric)
    n = clean.tokens.shape[1]
    assert by_pos.shape == (model.cfg.n_layers, n, model.cfg.n_heads)
    every = patching.get_act_patch_block_every(model, corrupted.tokens, clean_cache, metric)
    assert every.shape == (3, model.cfg.n_layers, n)
    assert torch.allclose(every[0], patching.get_act_patch_resid_pre(model, corrupted.tokens, clean_cache, metric))
    per_example_metric = lambda logits: logits[:, -1, answer_token]  # noqa: E731  [batch]
    per_example = patching.generic_activation_patch(
        model, corrupted.tokens, clean_cache, per_example_metric, patching.layer_pos_patch_setter,
        "resid_pre", index_axis_names=("layer", "pos"), reduce="none",
    )
    assert per_example.values.shape[-1] == 1  # one example
    assert torch.allclose(per_example.mean(), every[0])


def test_logit_lens_final_layer_reproduces_logits(model, clean_and_corrupted, answer_token):
    clean, _ = clean_and_corrupted
    logits, cache = model.run_with_cache(clean.tokens)
    result = logit_lens(cache, targets=[answer_token])
    assert (result.values[-1, 0, 0] - logits[0, -1, answer_token]).abs().max() <= LOGITS_FP32


def test_direct_logit_attribution_reconstructs_the_logit(model, clean_and_corrupted, answer_token):
    clean, _ = clean_and_corrupted
    with torch.no_grad():
        logit = model(clean.tokens)[0, -1, answer_token]
    dla = direct_logit_attribution(model, clean.tokens, answer_tokens=[answer_token])
    assert abs(dla.attribution.sum().item() - logit.item()) <= LOGITS_FP32 * 10
    assert "embed" in dla.labels


def test_attribution_patching_runs_on_video_pairs(model, clean_and_corrupted, answer_token):
    clean, corrupted = clean_and_corrupted
    result = attribution_patch(model, clean.tokens, corrupted.tokens, logit_metric(answer_token))
    assert len(result.node_scores) > 0
    assert all(torch.isfinite(torch.as_tensor(score)).all() for score in result.node_scores.values())
