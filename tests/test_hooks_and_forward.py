"""Hook points, partial forwards and the key/value cache behave as TransformerLens users expect."""

from __future__ import annotations

import pytest
import torch

from tl_video import KeyValueCache
from tests.conftest import random_video
from tests.tolerances import EXACT, FUSED_VS_EAGER_FP32

CLASSIC_LAYER_HOOKS = [
    "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
    "ln1.hook_scale", "ln1.hook_normalized", "ln2.hook_scale", "ln2.hook_normalized",
    "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k",
    "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "attn.hook_attn_mask",
    "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post",
]
MODEL_HOOKS = ["hook_embed", "hook_video_embed", "ln_final.hook_scale", "ln_final.hook_normalized"]
SWITCHED_HOOKS = {  # TransformerLens switch -> hooks that exist only with it on
    "use_attn_result": ["attn.hook_result"],
    "use_split_qkv_input": ["hook_q_input", "hook_k_input", "hook_v_input"],
    "use_hook_mlp_in": ["hook_mlp_in"],
    "use_attn_in": ["hook_attn_in"],
}


@pytest.fixture(scope="module")
def prepared(model):
    return model.prepare(video=random_video(20), prompt="Describe the motion.")


def all_hook_names(model) -> list[str]:
    layer_hooks = CLASSIC_LAYER_HOOKS + [h for hooks in SWITCHED_HOOKS.values() for h in hooks]
    return MODEL_HOOKS + [f"blocks.{l}.{h}" for l in range(model.cfg.n_layers) for h in layer_hooks]


def test_every_classic_hook_point_exists(model):
    missing = [name for name in all_hook_names(model) if name not in model.hook_dict]
    assert not missing


@pytest.mark.parametrize("hook", MODEL_HOOKS + [f"blocks.1.{h}" for h in CLASSIC_LAYER_HOOKS if h != "attn.hook_attn_mask"])
def test_editing_each_hook_changes_the_logits(model, prepared, hook):
    """A hook's return value is what flows on (no hook is called and then ignored)."""
    with torch.no_grad():
        baseline = model(prepared.tokens)
        edited = model.run_with_hooks(prepared.tokens, fwd_hooks=[(hook, lambda x, hook: x * 1.5 + 0.1)])
    assert (edited - baseline).abs().max() > 1e-3, f"editing {hook} did not change the output"


@pytest.mark.parametrize("switch", list(SWITCHED_HOOKS))
def test_switched_hooks_fire_and_edit(model, prepared, switch):
    with torch.no_grad():
        baseline = model(prepared.tokens)
        setattr(model.cfg, switch, True)
        try:
            _, cache = model.run_with_cache(prepared.tokens)
            same = model(prepared.tokens)
            hook = f"blocks.1.{SWITCHED_HOOKS[switch][0]}"
            edited = model.run_with_hooks(prepared.tokens, fwd_hooks=[(hook, lambda x, hook: x * 1.5 + 0.1)])
        finally:
            setattr(model.cfg, switch, False)
    for name in SWITCHED_HOOKS[switch]:
        assert f"blocks.0.{name}" in cache.keys()
    assert (same - baseline).abs().max() <= 1e-5
    assert (edited - baseline).abs().max() > 1e-3


def test_attention_mask_hook_blocks_edges(model, prepared):
    """Blocking every key but the query's own position makes attention output v of that position."""
    def only_self(mask, hook):
        n = mask.shape[-1]
        return mask.masked_fill(~torch.eye(n, dtype=torch.bool), torch.finfo(mask.dtype).min)

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_attn_mask", only_self)]):
        _, blocked = model.run_with_cache(prepared.tokens)
    pattern = blocked["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern, torch.eye(pattern.shape[-1]).expand_as(pattern))


def test_start_and_stop_at_layer_compose_to_the_full_forward(model, prepared):
    with torch.no_grad():
        full = model(prepared.tokens)
        for layer in range(model.cfg.n_layers + 1):
            residual = model(prepared.tokens, stop_at_layer=layer)
            resumed = model(residual, start_at_layer=layer, tokens=prepared.tokens)
            assert (resumed - full).abs().max() <= EXACT


def test_kv_cache_continuation_equals_one_forward(model, prepared):
    tokens = prepared.tokens
    split = prepared.layout.segments["after_video"].start + 2
    with torch.no_grad():
        model.cfg.attn_implementation = "eager"
        try:
            full = model(tokens)
            cache = KeyValueCache.empty(model.cfg.n_layers)
            first = model(tokens[:, :split], past_kv_cache=cache)
            rest = model(tokens[:, split:], past_kv_cache=cache)
        finally:
            model.cfg.attn_implementation = "auto"
    assert cache.length == tokens.shape[1]
    assert (torch.cat([first, rest], dim=1) - full).abs().max() <= FUSED_VS_EAGER_FP32


def test_left_padded_batch_matches_single_rows(model):
    short = model.prepare(video=random_video(21), prompt="Go.")
    long = model.prepare(video=random_video(22), prompt="A much longer question here?")
    pad = long.tokens.shape[1] - short.tokens.shape[1]
    batch = torch.cat([torch.cat([torch.zeros(1, pad, dtype=torch.long), short.tokens], 1), long.tokens])
    mask = torch.ones_like(batch)
    mask[0, :pad] = 0
    with torch.no_grad():
        batched = model(batch, attention_mask=mask)
        alone = model(short.tokens)
    assert (batched[0, -1] - alone[0, -1]).abs().max() <= FUSED_VS_EAGER_FP32


def test_generate_with_and_without_cache_agree_and_hooks_apply(model, prepared):
    with_cache = model.generate(prepared.tokens, max_new_tokens=5, stop_at_eos=False)
    without = model.generate(prepared.tokens, max_new_tokens=5, stop_at_eos=False, use_past_kv_cache=False)
    assert with_cache.tolist() == without.tolist()
    boost = model.cfg.d_vocab - 1
    def force(logit_input, hook):  # push the final residual towards one token's direction
        return logit_input + 100 * model.W_U[:, boost]
    with model.hooks(fwd_hooks=[("ln_final.hook_normalized", force)]):
        forced = model.generate(prepared.tokens, max_new_tokens=3, stop_at_eos=False)
    assert forced[0, -3:].tolist() == [boost] * 3


def test_string_helpers_render_video_tokens(model, prepared):
    text = model.to_string(prepared.tokens[0])
    assert f"<video x {len(prepared.layout.video_positions)}>" in text
    pieces = model.to_str_tokens(prepared.tokens)
    first_video = prepared.layout.video_positions[0]
    assert pieces[first_video] == "<video f0 r0 c0>"
    assert model.to_single_token("A") == model.to_tokens("A", prepend_bos=False)[0, 0].item()
    with pytest.raises(ValueError, match="not a single token"):
        model.to_single_token("AB")


def test_suffix_recomputation_from_a_layer_against_cached_keys(model, prepared):
    """What knockout speed-ups need: rerun only positions >= split from layer l, reusing the prefix's keys/values."""
    tokens = prepared.tokens
    split, layer = prepared.layout.segments["after_video"].start, 1
    with torch.no_grad():
        full_cache = KeyValueCache.empty(model.cfg.n_layers)
        full = model(tokens, past_kv_cache=full_cache)
        _, activations = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_pre")
        suffix_residual = activations[f"blocks.{layer}.hook_resid_pre"][:, split:]
        suffix = model(suffix_residual, start_at_layer=layer, past_kv_cache=full_cache.prefix(split))
    assert (suffix - full[:, split:]).abs().max() <= FUSED_VS_EAGER_FP32


def test_to_dtype_and_device_moves_bank_and_config(tiny_checkpoint):
    import tl_video

    model = tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint)
    prepared = model.prepare(video=random_video(23), prompt="Anything?")
    model.video_bank.register(torch.zeros(2, model.cfg.d_model), torch.zeros(2, 3, dtype=torch.long),
                              extras={"probe": torch.ones(2, 5)})
    with torch.no_grad():
        reference = model(prepared.tokens)
        model.to(torch.float64).to("cpu")
        assert model.cfg.dtype == torch.float64 and model.cfg.device == "cpu"
        assert model.video_bank.embeddings.dtype == torch.float64
        assert model.video_bank.extras["probe"].shape == (len(model.video_bank), 5)
        assert (model(prepared.tokens).float() - reference).abs().max() < 1e-4
