"""The fused causal fast path: taken only when nothing edits or reads the mask, and exact.

With no padding, no cached prefix and no hook on `hook_attn_mask`, attention calls SDPA with
`is_causal=True` and no mask tensor; anything that edits or reads the mask (a mask hook, a
knockout, `run_with_cache`), padding, or a key/value cache takes the masked path. Both paths
agree within 1e-6 in fp32. The kernel calls are observed by wrapping the real
`scaled_dot_product_attention` (the computation itself is untouched).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tl_video
from tests.conftest import random_video
from tl_video.interventions import KnockoutSpec, knockout_hooks
from tl_video.model.kv_cache import KeyValueCache
from tl_video.model.masks import CausalMask, forward_mask

EXACT = 1e-6


@pytest.fixture(scope="module")
def gqa_model(tiny_checkpoints):
    return tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoints["gqa_bias"])


@pytest.fixture(scope="module")
def prepared(gqa_model):
    return gqa_model.prepare(video=random_video(5), prompt="Where does the square go?")


@pytest.fixture
def kernel_calls(monkeypatch):
    """Record, per SDPA call, whether it ran causal without a mask tensor."""
    calls: list[str] = []
    real = F.scaled_dot_product_attention

    def observed(*args, **kwargs):
        causal = kwargs.get("is_causal", False) and kwargs.get("attn_mask") is None
        calls.append("causal" if causal else "masked")
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", observed)
    return calls


def identity_mask_hooks(n_layers: int):
    return [(f"blocks.{layer}.attn.hook_attn_mask", lambda mask, hook: mask) for layer in range(n_layers)]


@torch.no_grad()
def test_fast_path_equals_masked_path_and_is_taken(gqa_model, prepared, kernel_calls):
    model, tokens = gqa_model, prepared.tokens
    assert model.cfg.n_key_value_heads < model.cfg.n_heads  # grouped-query attention on both paths
    fast = model(tokens)
    assert kernel_calls == ["causal"] * model.cfg.n_layers
    kernel_calls.clear()
    with model.hooks(fwd_hooks=identity_mask_hooks(model.cfg.n_layers)):
        masked = model(tokens)
    assert kernel_calls == ["masked"] * model.cfg.n_layers
    assert (fast - masked).abs().max() <= EXACT


@torch.no_grad()
def test_an_all_ones_attention_mask_keeps_the_fast_path(gqa_model, prepared, kernel_calls):
    fast = gqa_model(prepared.tokens)
    ones = gqa_model(prepared.tokens, attention_mask=torch.ones_like(prepared.tokens))
    assert set(kernel_calls) == {"causal"}
    assert torch.equal(fast, ones)


@torch.no_grad()
def test_knockout_padding_and_kv_cache_take_the_masked_path(gqa_model, prepared, kernel_calls):
    model, tokens, n_layers = gqa_model, prepared.tokens, gqa_model.cfg.n_layers
    clean = model(tokens)
    kernel_calls.clear()

    spec = KnockoutSpec.of([("video", "last")], [0])
    with model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, n_layers)):
        knocked = model(tokens)
    assert kernel_calls[0] == "masked" and (knocked - clean).abs().max() > 1e-4
    kernel_calls.clear()

    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), tokens], dim=1)
    attention_mask = torch.ones_like(padded)
    attention_mask[0, :3] = 0
    with_padding = model(padded, attention_mask=attention_mask)
    assert kernel_calls == ["masked"] * n_layers
    assert (with_padding[0, -1] - clean[0, -1]).abs().max() <= 1e-5
    kernel_calls.clear()

    cache = KeyValueCache.empty(n_layers)
    split = tokens.shape[1] - 4
    model(tokens[:, :split], past_kv_cache=cache)  # no prefix yet: the fast path
    continued = model(tokens[:, split:], past_kv_cache=cache)  # queries after a cached prefix: masked
    assert kernel_calls == ["causal"] * n_layers + ["masked"] * n_layers
    assert (continued[0, -1] - clean[0, -1]).abs().max() <= 1e-5


@torch.no_grad()
def test_run_with_cache_still_records_the_causal_mask(gqa_model, prepared):
    _, cache = gqa_model.run_with_cache(prepared.tokens, names_filter=lambda name: name.endswith("hook_attn_mask"))
    n = prepared.tokens.shape[1]
    mask = cache["blocks.0.attn.hook_attn_mask"]
    assert mask.shape == (1, 1, n, n)
    assert torch.equal(mask[0, 0] == 0, torch.ones(n, n, dtype=torch.bool).tril())


@torch.no_grad()
def test_fully_blocked_rows_still_attend_to_nothing(gqa_model, prepared):
    """A mask hook that blocks every key of some queries: those queries' z is exactly zero."""
    rows = [2, prepared.tokens.shape[1] - 1]

    def blind(mask, hook):
        mask = mask.clone()
        mask[..., rows, :] = torch.finfo(mask.dtype).min
        return mask

    with gqa_model.hooks(fwd_hooks=[("blocks.0.attn.hook_attn_mask", blind)]):
        _, cache = gqa_model.run_with_cache(prepared.tokens, names_filter="blocks.0.attn.hook_z")
    z = cache["blocks.0.attn.hook_z"]
    assert torch.equal(z[0, rows], torch.zeros_like(z[0, rows]))
    assert z[0, 3].abs().max() > 0


def test_forward_mask_is_lazy_only_when_plain_causal():
    index = torch.arange(5)
    lazy = forward_mask(index, index, None, 2, torch.float32)
    assert isinstance(lazy, CausalMask) and lazy.shape == (2, 1, 5, 5)
    assert torch.equal(lazy.tensor()[0, 0] == 0, torch.ones(5, 5, dtype=torch.bool).tril())
    padding = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert isinstance(forward_mask(index, index, padding, 2, torch.float32), torch.Tensor)
    assert isinstance(forward_mask(torch.arange(3, 5), index, None, 2, torch.float32), torch.Tensor)


def hand_attention(q, k, v, mask, scale):
    """Softmax attention written out, fully blocked rows zero (GQA by repeating key/value heads)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-1, -2) * scale + mask
    blocked = (mask <= torch.finfo(mask.dtype).min).all(dim=-1, keepdim=True)
    return (scores.softmax(-1) @ v).masked_fill(blocked, 0.0)


@pytest.mark.parametrize("n_queries", [600, 350])  # a forward, and queries after a cached prefix
def test_chunked_masked_attention_equals_one_call(n_queries):
    from tl_video.model.attention import fused_masked_attention

    generator = torch.Generator().manual_seed(0)
    n_keys, minimum = 600, torch.finfo(torch.float32).min
    q = torch.randn(1, 4, n_queries, 16, generator=generator)
    k, v = (torch.randn(1, 2, n_keys, 16, generator=generator) for _ in range(2))
    query_index = torch.arange(n_keys - n_queries, n_keys)
    allowed = torch.arange(n_keys)[None, :] <= query_index[:, None]
    allowed &= torch.rand(n_queries, n_keys, generator=generator) > 0.3  # knockout-like holes
    allowed[[5, 300]] = False  # fully blocked rows
    mask = torch.zeros(1, 1, n_queries, n_keys).masked_fill(~allowed, minimum)
    expected = hand_attention(q, k, v, mask, 0.25)
    chunked = fused_masked_attention(q, k, v, mask, 0.25, True)
    assert (chunked - expected).abs().max() <= EXACT
    assert torch.equal(chunked[0, :, [5, 300]], torch.zeros_like(chunked[0, :, [5, 300]]))
    opened = mask.clone()
    opened[0, 0, 10, n_keys - 1] = 0.0  # a hook opened a future key: one call over every key
    assert (fused_masked_attention(q, k, v, opened, 0.25, True) - hand_attention(q, k, v, opened, 0.25)).abs().max() <= EXACT


@torch.no_grad()
def test_knockout_forward_is_the_same_chunked_or_not(gqa_model, prepared, monkeypatch):
    import tl_video.model.attention as attention

    spec = KnockoutSpec.of([("video", "question"), ("question", "last")], range(gqa_model.cfg.n_layers))
    hooks = knockout_hooks(spec, prepared.layout, gqa_model.cfg.n_layers)
    with gqa_model.hooks(fwd_hooks=hooks):
        monkeypatch.setattr(attention, "QUERY_CHUNK", 10**9)
        whole = gqa_model(prepared.tokens)
        monkeypatch.setattr(attention, "QUERY_CHUNK", 16)
        chunked = gqa_model(prepared.tokens)
    assert prepared.tokens.shape[1] > 3 * 16
    assert (whole - chunked).abs().max() <= EXACT
