"""What a knockout means, checked against hand computations rather than our own mask code.

- A query whose every key is blocked attends to nothing (zero z, zero pattern row, b_O only).
- Hooks compiled for one layout refuse a sequence of another length.
- Generation: generated rows inherit the last prompt row's blocked keys; generated keys stay open.
- Edge accounting, keep-only specs, the effective-pathway and random-blocking specs.
- Specs as data: JSON errors, layer numbers that are not integers.
"""

from __future__ import annotations

import json

import pytest
import torch

import tl_video
from tl_video import KeyValueCache
from tl_video.interventions import KnockoutSpec, knockout_hooks, window_layers
from tl_video.interventions.knockout import EdgeBlock
from tl_video.interventions.windows import checked_layers
from tests.conftest import random_video
from tests.tolerances import EXACT, FUSED_VS_EAGER_FP32

PROMPT = "Where does the square go?"


@pytest.fixture(scope="module")
def biased_model(tiny_checkpoints):
    """LLaVA-NeXT-Video with GQA and attention biases (so b_O is present and non-zero)."""
    model = tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoints["gqa_bias"])
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_O.normal_(generator=torch.Generator().manual_seed(block.attn.b_O.numel()))
    return model


@pytest.fixture(scope="module")
def prepared(biased_model):
    return biased_model.prepare(video=random_video(40), prompt=PROMPT)


def every_layer(model):
    return range(model.cfg.n_layers)


def forward(model, tokens, hooks, implementation="auto", cache_names=()):
    """Logits (and the named activations) with `hooks`, on the fused or the eager path."""
    model.cfg.attn_implementation = implementation
    try:
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            if cache_names:
                logits, cache = model.run_with_cache(tokens, names_filter=list(cache_names))
                return logits, cache
            return model(tokens), None
    finally:
        model.cfg.attn_implementation = "auto"


def hand_fully_blocked_rows(layout, blocked_queries_keys):
    """Query positions all of whose causal keys (0..q) are in the blocked set, by plain loops."""
    blocked = set(blocked_queries_keys)
    return [q for q in range(layout.n_tokens) if all((q, k) in blocked for k in range(q + 1))]


# --------------------------------------------------------------------------- attends to nothing
def test_text_blocked_from_text_everywhere_makes_position_0_blind_to_the_future(biased_model, prepared):
    """Position 0 sees only itself (text), so text↛text leaves it nothing: its logits cannot depend on later tokens."""
    model = biased_model
    spec = KnockoutSpec.of([("text", "text")], every_layer(model))
    hooks = knockout_hooks(spec, prepared.layout, model.cfg.n_layers)
    changed = prepared.tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % model.cfg.d_vocab
    for implementation in ("auto", "eager"):
        first, _ = forward(model, prepared.tokens, hooks, implementation)
        second, _ = forward(model, changed, hooks, implementation)
        assert (first[0, 0] - second[0, 0]).abs().max().item() == EXACT
    # the same edit without knockout does not reach position 0 either (causal), but the video rows do move
    assert not torch.equal(first[0, -1], second[0, -1])


def test_fully_blocked_rows_have_zero_pattern_zero_z_and_only_the_output_bias(biased_model, prepared):
    model = biased_model
    layout = prepared.layout
    spec = KnockoutSpec.of([("text", "text")], every_layer(model))
    text = layout.positions("text").tolist()
    fully_blocked = hand_fully_blocked_rows(layout, [(q, k) for q in text for k in text])
    assert fully_blocked == list(range(layout.positions("video").min().item()))  # the text before the video
    open_rows = [q for q in range(layout.n_tokens) if q not in fully_blocked]
    names = [f"blocks.{l}.attn.{h}" for l in every_layer(model) for h in ("hook_pattern", "hook_z")]
    names += [f"blocks.{l}.hook_attn_out" for l in every_layer(model)]
    _, cache = forward(model, prepared.tokens, knockout_hooks(spec, layout, model.cfg.n_layers), cache_names=names)
    for layer in every_layer(model):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # [head, query, key]
        assert pattern[:, fully_blocked].abs().max().item() == 0.0
        assert torch.allclose(pattern[:, open_rows].sum(-1), torch.ones(()), atol=1e-6)
        assert cache[f"blocks.{layer}.attn.hook_z"][0, fully_blocked].abs().max().item() == 0.0
        b_O = model.blocks[layer].attn.b_O
        assert b_O.abs().max() > 0
        attn_out = cache[f"blocks.{layer}.hook_attn_out"][0, fully_blocked]
        assert (attn_out - b_O).abs().max().item() <= 1e-6


@pytest.mark.parametrize("spec_name", ["text_to_text", "keep_only_video_to_last", "block_everything"])
def test_fused_equals_eager_with_fully_blocked_rows(biased_model, prepared, spec_name):
    model = biased_model
    n = model.cfg.n_layers
    spec = {
        "text_to_text": KnockoutSpec.of([("text", "text")], range(n)),
        "keep_only_video_to_last": KnockoutSpec.keep_only([("video", "last")], [0]),
        "block_everything": KnockoutSpec.of([("all", "all")], range(n)),
    }[spec_name]
    hooks = knockout_hooks(spec, prepared.layout, n)
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(n)]
    fused, fused_cache = forward(model, prepared.tokens, hooks, "auto", z_names)
    eager, eager_cache = forward(model, prepared.tokens, hooks, "eager", z_names)
    assert not any(model.blocks[l].attn.needs_pattern() for l in range(n))  # the fused path really ran
    assert torch.isfinite(fused).all()
    assert (fused - eager).abs().max().item() <= FUSED_VS_EAGER_FP32
    for name in z_names:
        assert (fused_cache[name] - eager_cache[name]).abs().max().item() <= FUSED_VS_EAGER_FP32


def test_blocking_every_edge_leaves_each_position_alone(biased_model, prepared):
    """With all attention blocked a position's output depends only on its own token: equal to that token run alone."""
    model = biased_model
    block_all = [(f"blocks.{l}.attn.hook_attn_mask", lambda mask, hook: torch.full_like(mask, torch.finfo(mask.dtype).min))
                 for l in every_layer(model)]
    tokens = prepared.tokens
    for implementation in ("auto", "eager"):
        together, _ = forward(model, tokens, block_all, implementation)
        for position in (0, prepared.layout.positions("video")[3].item(), tokens.shape[1] - 1):
            alone, _ = forward(model, tokens[:, position : position + 1], block_all, implementation)
            assert (together[0, position] - alone[0, 0]).abs().max().item() <= 1e-5


def test_blocking_every_edge_in_generation_with_the_kv_cache(biased_model, prepared):
    """Each generated token is the argmax of its predecessor run alone, with and without the cache."""
    model = biased_model
    block_all = [(f"blocks.{l}.attn.hook_attn_mask", lambda mask, hook: torch.full_like(mask, torch.finfo(mask.dtype).min))
                 for l in every_layer(model)]
    with model.hooks(fwd_hooks=block_all):
        cached = model.generate(prepared.tokens, max_new_tokens=3, stop_at_eos=False)
        uncached = model.generate(prepared.tokens, max_new_tokens=3, stop_at_eos=False, use_past_kv_cache=False)
        with torch.no_grad():
            expected = [model(cached[:, i - 1 : i])[0, 0].argmax().item() for i in range(prepared.tokens.shape[1], cached.shape[1])]
    assert cached.tolist() == uncached.tolist()
    assert cached[0, prepared.tokens.shape[1]:].tolist() == expected


# --------------------------------------------------------------------------- hooks check the sequence
def test_hooks_refuse_an_input_of_another_length(biased_model, prepared):
    model = biased_model
    other = model.prepare(video=random_video(41), prompt=PROMPT + " Answer briefly, please.")
    assert other.tokens.shape[1] != prepared.tokens.shape[1]
    hooks = knockout_hooks(KnockoutSpec.of([("video", "last")], [0]), prepared.layout, model.cfg.n_layers)
    n, m = prepared.layout.n_tokens, other.layout.n_tokens
    with pytest.raises(ValueError, match=rf"layout of {n} tokens but met a sequence of {m} tokens.*that input's own layout"):
        forward(model, other.tokens, hooks)
    with pytest.raises(ValueError, match=rf"{n} tokens but met a sequence of {n - 1} tokens"):
        forward(model, prepared.tokens[:, :-1], hooks)
    # a longer full forward whose start is the prompt is refused outside generation too
    longer = torch.cat([prepared.tokens, prepared.tokens[:, -1:]], dim=1)
    with pytest.raises(ValueError, match=rf"met a sequence of {n + 1} tokens"):
        forward(model, longer, hooks)


def test_hooks_accept_queries_past_the_prompt_with_the_kv_cache(biased_model, prepared):
    model = biased_model
    hooks = knockout_hooks(KnockoutSpec.of([("video", "last")], [0]), prepared.layout, model.cfg.n_layers)
    cache = KeyValueCache.empty(model.cfg.n_layers)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(prepared.tokens, past_kv_cache=cache)
        step = model(prepared.tokens[:, -2:], past_kv_cache=cache)
    assert step.shape[1] == 2 and cache.length == prepared.tokens.shape[1] + 2


# --------------------------------------------------------------------------- specs as data: clear errors
@pytest.mark.parametrize(
    "data, message",
    [
        ([{"source": "video", "target": "last", "layers": [0]}], "must be a JSON object"),
        ("video->last", "must be a JSON object"),
        (None, "must be a JSON object"),
        ({"blocks": {"source": "video"}}, "'blocks' must be a list"),
        ({"blocks": ["video->last"]}, "block 0 must be an object"),
        ({"blocks": [{"source": "video", "target": "last", "layers": 3}]}, "'layers' must be a list of integers"),
        ({"blocks": [{"source": "video", "target": "last", "layers": [1.7]}]}, r"must be an integer, got 1\.7"),
        ({"blocks": [{"source": "video", "target": "last", "layers": ["1"]}]}, "must be an integer, got '1'"),
        ({"blocks": [{"source": "video", "target": "last", "layers": [True]}]}, "got the boolean True"),
        ({"blocks": [{"source": "video", "target": "last"}]}, "block 0: .*layers"),
        ({"blocks": [{"source": 3, "target": "last", "layers": [0]}]}, "source must be a non-empty selector string"),
        ({"blocks": [{"kind": "wormhole"}]}, "unknown kind 'wormhole'"),
        ({"blocks": [{"kind": "pairs", "pairs": [[0, 0]]}]}, "'pairs' must be an object keyed by layer"),
        ({"blocks": [{"kind": "pairs", "pairs": {"x": [[0, 0]]}}]}, "layer key 'x'"),
        ({"label": 3, "blocks": []}, "label must be a string"),
        ({"allow_empty_groups": "yes", "blocks": []}, "allow_empty_groups must be true or false"),
    ],
)
def test_from_json_of_bad_data_raises_one_clear_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        KnockoutSpec.from_json(data)


@pytest.mark.parametrize("bad", [1.7, "1", True, 2.0, None])
def test_non_integer_layer_numbers_are_errors_not_truncated(bad):
    with pytest.raises(ValueError, match="must be an integer"):
        EdgeBlock(source="video", target="last", layers=(0, bad))
    with pytest.raises(ValueError, match="must be an integer"):
        checked_layers([0, bad], 4)
    with pytest.raises(ValueError, match="must be an integer"):
        KnockoutSpec.of([("video", "last")], [bad])


def test_layers_given_as_one_number_or_a_string_are_errors():
    with pytest.raises(ValueError, match=r"list of integers.*e\.g\. \[3\]"):
        checked_layers(3, 4)
    with pytest.raises(ValueError, match="list of integers"):
        EdgeBlock(source="video", target="last", layers="12")
    assert checked_layers(range(1, 3), 4) == [1, 2]
    assert checked_layers([torch.tensor(1)], 4) == [1]


@pytest.mark.parametrize("k, message", [(0, "k=0 must be >= 1"), (-3, "must be >= 1"), (2.5, "k must be an integer"),
                                        ("9", "k must be an integer"), (True, "boolean"), (None, "k must be an integer")])
def test_bad_window_size_is_a_clear_error(k, message):
    with pytest.raises(ValueError, match=message):
        window_layers(3, 12, k=k)


def test_bad_window_centre_is_a_clear_error():
    with pytest.raises(ValueError, match="centre layer must be an integer"):
        window_layers(2.5, 12)


def test_window_larger_than_the_model_is_clipped_only_when_asked():
    with pytest.raises(ValueError, match="clip=True"):
        window_layers(2, 6, k=9)
    with pytest.warns(UserWarning, match="k=9 is larger than the model's 6 layers"):
        assert window_layers(2, 6, k=9, clip=True) == tuple(range(6))
    with pytest.warns(UserWarning):
        assert window_layers(5, 6, k=9, style="inverse", clip=True) == (0,)


def test_spec_json_round_trip_keeps_new_block_kinds():
    from tl_video.interventions.knockout import EdgePairs, RandomEdges

    spec = KnockoutSpec(
        blocks=(
            EdgeBlock(source="video", target="question", layers=range(2)),
            *KnockoutSpec.keep_only([("video", "question"), ("question", "last")], [1]).blocks,
            EdgePairs(pairs={1: [(5, 2), (4, 4)], 0: [(3, 1)]}),
            RandomEdges(counts={0: 4, 1: 2}, seed=7),
        ),
        label="mixed",
    )
    assert KnockoutSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert repr(spec) == (
        "KnockoutSpec(mixed: video↛question @ L1-L2; keep only video→question, question→last @ L2; "
        "pairs (L1: 1, L2: 2); random pairs from video on, seed 7 (L1: 4, L2: 2))"
    )
    # the original format (no "kind") still reads
    old = {"label": "", "allow_empty_groups": False, "blocks": [{"source": "video", "target": "last", "layers": [0]}]}
    assert KnockoutSpec.from_json(old) == KnockoutSpec.of([("video", "last")], [0])
