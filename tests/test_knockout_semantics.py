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


def test_a_bad_selector_in_json_stays_a_selector_error():
    from tl_video.prompts.layout import SelectorError

    with pytest.raises(SelectorError, match="block 0: EdgeBlock source"):
        KnockoutSpec.from_json({"blocks": [{"source": ["video"], "target": "last", "layers": [0]}]})


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


# --------------------------------------------------------------------------- generation under knockout
def hand_blocked(layout, edges, length):
    """[length, length] blocked (query, key) pairs built with plain loops: prompt rows from the
    (source=keys, target=queries) edges; rows past the prompt copy the last prompt row's prompt keys."""
    n = layout.n_tokens
    blocked = torch.zeros(length, length, dtype=torch.bool)
    for source, target in edges:
        for q in layout.positions(target).tolist():
            for k in layout.positions(source).tolist():
                blocked[q, k] = True
    for q in range(n, length):
        for k in range(n):
            blocked[q, k] = blocked[n - 1, k]
    return blocked


def test_generated_rows_inherit_the_last_prompt_row_and_new_keys_stay_open(biased_model, prepared):
    model = biased_model
    n, n_layers = prepared.layout.n_tokens, model.cfg.n_layers
    edges = [("video", "last"), ("last", "last"), ("question", "last")]
    hooks = knockout_hooks(KnockoutSpec.of(edges, range(n_layers)), prepared.layout, n_layers)
    generated = model.generate(prepared.tokens, max_new_tokens=3, stop_at_eos=False)
    with model.hooks(fwd_hooks=hooks):
        cached = model.generate(prepared.tokens, max_new_tokens=3, stop_at_eos=False)
        uncached = model.generate(prepared.tokens, max_new_tokens=3, stop_at_eos=False, use_past_kv_cache=False)
    assert cached.tolist() == uncached.tolist()
    # step by step with the cache, the logits of every generated row ...
    cache = KeyValueCache.empty(n_layers)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        steps = [model(cached[:, :n], past_kv_cache=cache)[0, -1]]
        steps += [model(cached[:, i : i + 1], past_kv_cache=cache)[0, -1] for i in range(n, cached.shape[1] - 1)]
    # ... equal one forward over prompt + generated tokens with the hand-built mask
    sequence = cached[:, :-1]
    expected = hand_blocked(prepared.layout, edges, sequence.shape[1])
    assert expected[n:, prepared.layout.positions("video")].all() and not expected[n:, n:].any()

    def hand_hooks(blocked):
        return [(f"blocks.{l}.attn.hook_attn_mask", lambda mask, hook: mask.masked_fill(blocked, torch.finfo(mask.dtype).min))
                for l in range(n_layers)]

    by_hand, _ = forward(model, sequence, hand_hooks(expected))
    rows = list(range(n - 1, sequence.shape[1]))
    difference = (torch.stack(steps) - by_hand[0, rows]).abs().max().item()
    assert difference <= FUSED_VS_EAGER_FP32, difference
    assert [int(step.argmax()) for step in steps] == cached[0, n:].tolist()
    # the alternative (generated rows left open) gives other numbers: the test can tell them apart
    open_rows = expected.clone()
    open_rows[n:] = False
    left_open, _ = forward(model, sequence, hand_hooks(open_rows))
    assert (left_open[0, n:] - by_hand[0, n:]).abs().max() > 1e-3
    assert generated.shape == cached.shape


# --------------------------------------------------------------------------- edge accounting
def tiny_layout():
    """8 tokens: 0 text | 1,2 frame 0 | 3,4 frame 1 | 5,6 question | 7 last."""
    from tl_video.prompts.layout import Span, layout_from_tokens

    video_mask = torch.tensor([0, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)
    grid = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]])
    return layout_from_tokens(torch.arange(8), video_mask, grid, text_segments={"question": Span(5, 7)})


def test_edge_counts_by_hand_on_a_tiny_layout():
    from tl_video.interventions.knockout import edge_counts

    layout = tiny_layout()
    spec = KnockoutSpec(blocks=(
        EdgeBlock(source="video", target="question", layers=(0, 1)),  # queries 5,6 x keys 1..4: 8 pairs
        EdgeBlock(source="last", target="last", layers=(0,)),  # (7,7): 1 pair
        EdgeBlock(source="question", target="video", layers=(0, 1)),  # keys after queries: 0 causal pairs
        EdgeBlock(source="video", target="last", layers=(1,)),  # (7, 1..4): 4 pairs
        EdgeBlock(source="frame[1]", target="last", layers=(1,)),  # (7, 3..4): already counted
    ))
    counts = edge_counts(spec, layout, n_layers=3)
    # baseline: 8 * 9 / 2 = 36 causal pairs per layer, 3 layers = 108
    assert counts.baseline_per_layer == 36 and counts.baseline == 108
    assert counts.suppressed_per_layer == (8 + 1, 8 + 4, 0)
    assert counts.kept_per_layer == (27, 24, 36)
    assert (counts.suppressed, counts.kept) == (21, 87)
    assert counts.suppressed_fraction == pytest.approx(21 / 108) and counts.kept_fraction == pytest.approx(87 / 108)
    assert "kept 87 of 108 (80.6%)" in repr(counts)
    # keep only video->question in layer 0: every other causal pair (36 - 8) is blocked
    keep = KnockoutSpec.keep_only([("video", "question")], [0])
    assert edge_counts(keep, layout, 1).suppressed_per_layer == (28,)
    assert edge_counts(KnockoutSpec(), layout, 2).suppressed == 0


def test_keep_only_blocks_everything_but_the_flows():
    from tl_video.interventions import blocked_edges_by_layer

    layout = tiny_layout()
    spec = KnockoutSpec.keep_only([("video", "question"), ("question", "last")], [1])
    blocked = blocked_edges_by_layer(spec, layout, 2)
    assert set(blocked) == {1}
    kept = {(q, k) for q in range(8) for k in range(8) if not blocked[1][q, k]}
    assert kept == {(q, k) for q in (5, 6) for k in (1, 2, 3, 4)} | {(7, 5), (7, 6)}


# The effective pathways as docs/methods.md states them, on the tiny layout, as (query, key) sets.
TEXT, F0, F1, Q, L = [0], [1, 2], [3, 4], [5, 6], [7]
V = F0 + F1


def pairs(queries, keys):
    return {(q, k) for q in queries for k in keys}


def expected_pathway_pairs(layer, cross, integration, answer, video_last=(), last_last=()):
    out = set()
    if layer not in cross:
        out |= pairs(F1, F0)  # frame 1 queries may not read frame 0
    if layer not in integration:
        out |= pairs(Q, V)
    if layer not in answer:
        out |= pairs(L, Q)
    if layer not in video_last:
        out |= pairs(L, V)
    if layer not in last_last:
        out |= pairs(L, L)
    if layer > max(integration):
        out |= pairs(V, V)
    if layer > max(answer):
        out |= pairs(Q, Q)
    return out


@pytest.mark.parametrize("cross, integration, answer, video_last, last_last", [
    ((0,), (0, 1), (1, 2), (), ()), ((), (1,), (0,), (), ()), ((0, 1, 2, 3), (2, 3), (3,), (), ()),
    ((0, 1), (1, 2), (2,), (3,), (0, 2)),
])
def test_effective_pathway_spec_blocks_what_the_methods_say(cross, integration, answer, video_last, last_last):
    from tl_video.interventions import blocked_edges_by_layer
    from tl_video.interventions.presets import effective_pathway_spec

    layout = tiny_layout()
    spec = effective_pathway_spec(layout, 4, cross_frame=cross, video_to_question=integration, question_to_last=answer,
                                  video_to_last=video_last, last_to_last=last_last)
    blocked = blocked_edges_by_layer(spec, layout, 4)
    for layer in range(4):
        got = {(q, k) for q in range(8) for k in range(8) if layer in blocked and blocked[layer][q, k]}
        assert got == expected_pathway_pairs(layer, cross, integration, answer, video_last, last_last), layer
    assert KnockoutSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_pathways_that_keep_every_flow_block_only_video_and_last_to_last(biased_model, prepared):
    from tl_video.interventions import blocked_edges_by_layer
    from tl_video.interventions.presets import effective_pathway_spec

    model = biased_model
    n, layout = model.cfg.n_layers, prepared.layout
    everything = range(n)
    spec = effective_pathway_spec(layout, n, everything, everything, everything)
    last, video = layout.positions("last").tolist(), layout.positions("video").tolist()
    expected = pairs(last, video) | pairs(last, last)
    blocked = blocked_edges_by_layer(spec, layout, n)
    for layer in everything:
        assert {tuple(p) for p in blocked[layer].nonzero().tolist()} == expected
    # and with nothing always blocked, it is the identity: exactly the unmasked forward
    identity = effective_pathway_spec(layout, n, everything, everything, everything, video_to_last=everything,
                                      last_to_last=everything)
    assert identity.blocks == ()
    baseline, _ = forward(model, prepared.tokens, [])
    kept_all, _ = forward(model, prepared.tokens, knockout_hooks(identity, layout, n))
    assert torch.equal(baseline, kept_all)


def test_random_baseline_blocks_as_many_edges_as_the_pathway(biased_model, prepared):
    from tl_video.interventions import blocked_edges_by_layer
    from tl_video.interventions.knockout import edge_counts
    from tl_video.interventions.presets import effective_pathway_spec, random_baseline_for, random_blocking_spec

    n, layout = biased_model.cfg.n_layers, prepared.layout
    pathway = effective_pathway_spec(layout, n, cross_frame=[0], video_to_question=[0], question_to_last=[1])
    random = random_baseline_for(pathway, layout, n, seed=3)
    assert edge_counts(random, layout, n).suppressed_per_layer == edge_counts(pathway, layout, n).suppressed_per_layer
    assert edge_counts(pathway, layout, n).suppressed > 0
    start = layout.positions("video").min().item()
    blocked = blocked_edges_by_layer(random, layout, n)
    for matrix in blocked.values():
        q, k = matrix.nonzero().T
        assert (k <= q).all() and (k >= start).all()  # causal, from the video start on
    again = blocked_edges_by_layer(random_baseline_for(pathway, layout, n, seed=3), layout, n)
    other = blocked_edges_by_layer(random_baseline_for(pathway, layout, n, seed=4), layout, n)
    assert all(torch.equal(blocked[l], again[l]) for l in blocked)
    assert any(not torch.equal(blocked[l], other[l]) for l in blocked)
    # a total is spread over the layers, exactly
    by_total = random_blocking_spec(layout, n, seed=1, total=101)
    assert edge_counts(by_total, layout, n).suppressed == 101
    assert KnockoutSpec.from_json(json.loads(json.dumps(random.to_json()))) == random
    with pytest.raises(ValueError, match="exactly one of per_layer"):
        random_blocking_spec(layout, n, seed=1)
    with pytest.raises(ValueError, match="cannot block"):
        knockout_hooks(random_blocking_spec(layout, n, seed=1, per_layer=[10**9, 0]), layout, n)


def test_random_pairs_cover_the_triangle_uniformly():
    """Drawing every candidate pair gives exactly the lower triangle from the region's start (diagonal included)."""
    from tl_video.interventions import blocked_edges_by_layer
    from tl_video.interventions.presets import random_blocking_spec

    layout = tiny_layout()
    everything = random_blocking_spec(layout, 1, seed=0, per_layer=[28])  # positions 1..7: 7 * 8 / 2 = 28
    blocked = blocked_edges_by_layer(everything, layout, 1)[0]
    assert {tuple(p) for p in blocked.nonzero().tolist()} == {(q, k) for q in range(1, 8) for k in range(1, q + 1)}


# --------------------------------------------------------------------------- presets against the stated edge lists
# docs/methods.md, "Sweep targets", written out here as (source = keys, target = queries, label), one spec per edge.
STATED_EDGES = {
    "vql-to-ql": [
        ("video", "question", "Video↛Question"), ("video", "last", "Video↛Last"),
        ("question", "last", "Question↛Last"), ("last", "last", "Last↛Last"),
    ],
    "question-and-options-to-last": [
        ("question_without_options", "last", "Non-option question↛Last"), ("true_option", "last", "True option↛Last"),
        ("false_options", "last", "False options↛Last"),
    ],
    "vq-to-true-opt": [
        ("video", "question_without_options", "Video↛Non-option question"),
        ("question_without_options", "true_option", "Non-option question↛True option"),
        ("video", "true_option", "Video↛True option"),
    ],
}


@pytest.fixture(scope="module")
def multiple_choice(biased_model):
    from tl_video.prompts import multiple_choice_prompt

    question = multiple_choice_prompt("Where does the square go?", ["left", "right", "up", "down"], answer_index=2)
    return biased_model.prepare(video=random_video(42), prompt=question, answer_prefix="Best option:(")


def blocked_pairs(spec, layout, n_layers, layer):
    from tl_video.interventions import blocked_edges_by_layer

    matrix = blocked_edges_by_layer(spec, layout, n_layers)[layer]
    return {tuple(p) for p in matrix.nonzero().tolist()}


@pytest.mark.parametrize("name", list(STATED_EDGES))
def test_presets_block_exactly_the_stated_edges(multiple_choice, name):
    from tl_video.interventions import preset

    layout = multiple_choice.layout
    specs = preset(name, layout, [1])
    assert [spec.label for spec in specs] == [label for _, _, label in STATED_EDGES[name]]
    for spec, (source, target, _) in zip(specs, STATED_EDGES[name]):
        expected = pairs(layout.positions(target).tolist(), layout.positions(source).tolist())
        assert expected and blocked_pairs(spec, layout, 2, 1) == expected, spec


def test_cross_frame_preset_is_the_stated_rule(multiple_choice):
    """For every frame i >= 1, frame i queries cannot see frames < i; nothing else is blocked."""
    from tl_video.interventions import preset

    layout = multiple_choice.layout
    (spec,) = preset("cross-frame", layout, [0])
    assert spec.label == "No cross-frame interactions"
    frame_of = {position: frame for position, (frame, _, _) in zip(layout.video_positions, layout.video_grid)}
    expected = {(q, k) for q, fq in frame_of.items() for k, fk in frame_of.items() if fk < fq}
    assert layout.n_frames >= 3 and expected
    assert blocked_pairs(spec, layout, 2, 0) == expected


def test_common_argument_mistakes_are_one_clear_line(prepared):
    spec = KnockoutSpec.of([("video", "last")], [0])
    with pytest.raises(ValueError, match="TokenLayout, got PreparedInput; pass prepared.layout"):
        knockout_hooks(spec, prepared, 2)
    with pytest.raises(ValueError, match="expected a KnockoutSpec, got dict .read JSON with KnockoutSpec.from_json"):
        knockout_hooks(spec.to_json(), prepared.layout, 2)
    with pytest.raises(ValueError, match="n_layers must be an integer"):
        knockout_hooks(spec, prepared.layout, 2.5)
    with pytest.raises(ValueError, match=r"each edge must be a \(source, target\) pair"):
        KnockoutSpec.of([("video", "question", "last")], [0])
    with pytest.raises(ValueError, match="edges must be a list of"):
        KnockoutSpec.of("video->last", [0])
