"""Gradient knockout attribution (tl_video/analyses/knockout_attribution.py) against independent oracles.

- The estimate equals the exact directional derivative d/dε m(A + ε ΔA) at ε = 0, by central finite
  differences through a hook that replaces the pattern, with ΔA read from the model's own knockout run
  (the knocked layer's pattern minus the clean one), not from the module's renormalisation.
- A knockout that blocks no causal edge is estimated as exactly 0 (and skipped, NaN, by the screen).
- On a tiny random model, where single-layer effects are small and close to linear, the screen ranks
  and signs the exact single-layer knockouts (`knockout_probabilities`) nearly perfectly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import tl_video
from tl_video.analyses.flow import FlowOptions
from tl_video.analyses.knockout_attribution import (
    KnockoutAttribution, knockout_attribution, knockout_estimates, log_odds, pattern_change,
)
from tl_video.analyses.scoring import score_example
from tl_video.data.examples import VideoQAExample
from tl_video.interventions.knockout import EdgeBlock, KnockoutSpec, blocked_edges_by_layer, knockout_hooks
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_llava_next_video

ALL_PRESETS = ("cross-frame", "vql-to-ql", "question-and-options-to-last", "vq-to-true-opt")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = save_tiny_llava_next_video(tmp_path_factory.mktemp("tiny"), num_hidden_layers=3)
    return tl_video.HookedVideoTransformer.from_pretrained(folder, dtype=torch.float64)


@pytest.fixture(scope="module")
def prepared(model):
    frames = np.random.RandomState(0).randint(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    question = multiple_choice_prompt("Which way does it move?", ["left", "right", "up"], answer_index=1)
    return model.prepare(video=frames, prompt=question, answer_prefix="Best option:(")


@pytest.fixture(scope="module")
def token(model, prepared):
    with torch.no_grad():
        return int(model(prepared.tokens)[0, -1].argmax())


def _oracle_change(model, prepared, spec, layer):
    """ΔA at `layer` from the model itself: pattern under the spec's blocks of that layer alone, minus clean."""
    single = KnockoutSpec(blocks=tuple(EdgeBlock(source=b.source, target=b.target, layers=(layer,))
                                       for b in spec.blocks if layer in b.layers))
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, clean = model.run_with_cache(prepared.tokens, names_filter=name)
        with model.hooks(fwd_hooks=knockout_hooks(single, prepared.layout, model.cfg.n_layers)):
            _, knocked = model.run_with_cache(prepared.tokens, names_filter=name)
    return knocked[name] - clean[name]


def _directional_derivative(model, prepared, token, changes, step=1e-3):
    """(m(A + hΔA) − m(A − hΔA)) / 2h with m the log-odds of `token`, every listed layer moved together."""
    def value(eps):
        hooks = [(f"blocks.{layer}.attn.hook_pattern", (lambda d: lambda pattern, hook: pattern + eps * d)(change))
                 for layer, change in changes.items()]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            return float(log_odds(model(prepared.tokens)[0, -1], token))
    return (value(step) - value(-step)) / (2 * step)


SPECS = {
    "video->question, one layer": KnockoutSpec.of([("video", "question")], [1]),
    "question->last, first layer": KnockoutSpec.of([("question", "last")], [0]),
    "fully blocked question rows": KnockoutSpec.of([("all", "question")], [0]),
    "fully blocked last row, last layer": KnockoutSpec.of([("all", "last")], [2]),
    "two flows, two layers (window)": KnockoutSpec.of([("video", "last"), ("question", "last")], [0, 2]),
    "cross-frame": KnockoutSpec(blocks=(EdgeBlock(source="frame[0]", target="frame[1:3]", layers=(0, 1)),)),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_estimate_is_the_directional_derivative_along_the_knockouts_pattern_change(model, prepared, token, name):
    spec = SPECS[name]
    layers = sorted(blocked_edges_by_layer(spec, prepared.layout, model.cfg.n_layers))
    changes = {layer: _oracle_change(model, prepared, spec, layer) for layer in layers}
    (per_layer,), _ = knockout_estimates(model, prepared, [spec], token)
    expected = _directional_derivative(model, prepared, token, changes)
    assert abs(expected) > 1e-3, "the oracle case must move the metric"
    assert float(per_layer.sum()) == pytest.approx(expected, rel=2e-3, abs=5e-4)
    assert all(float(per_layer[layer]) == 0.0 for layer in range(model.cfg.n_layers) if layer not in changes)
    if len(changes) > 1:  # each layer's entry is that layer's own directional derivative
        for layer, change in changes.items():
            alone = _directional_derivative(model, prepared, token, {layer: change})
            assert float(per_layer[layer]) == pytest.approx(alone, rel=2e-3, abs=5e-4)


def test_pattern_change_renormalises_rows_and_zeroes_fully_blocked_rows(model, prepared):
    spec = KnockoutSpec.of([("video", "question"), ("all", "last")], [1])
    blocked = blocked_edges_by_layer(spec, prepared.layout, model.cfg.n_layers)[1]
    names = ("blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern")
    with torch.no_grad():
        _, cache = model.run_with_cache(prepared.tokens, names_filter=lambda name: name in names)
    pattern = cache[names[1]][0]
    change = pattern_change(cache[names[0]][0], pattern, blocked)
    assert torch.allclose(change, _oracle_change(model, prepared, spec, 1)[0], atol=1e-6)
    knocked = pattern + change
    question, last = prepared.layout.positions("question"), prepared.layout.positions("last")
    assert torch.allclose(knocked[:, question].sum(-1), torch.ones(()).double(), atol=1e-6)
    assert float(knocked[:, last].abs().max()) == 0.0  # every key blocked: attends to nothing


def test_a_knockout_that_blocks_no_causal_edge_is_estimated_as_zero(model, prepared, token):
    later_keys = KnockoutSpec.of([("last", "video")], [0, 1, 2])  # keys after their queries: already causal-masked
    empty = KnockoutSpec()
    estimates, clean = knockout_estimates(model, prepared, [later_keys, empty], token)
    assert estimates.shape == (2, model.cfg.n_layers) and not estimates.any()
    with torch.no_grad():
        full_forward = float(log_odds(model(prepared.tokens)[0, -1], token))
    assert clean == pytest.approx(full_forward, abs=1e-6)  # the screen's eager softmax runs in fp32


def _example(example_id):
    return VideoQAExample(example_id=example_id, video=f"{example_id}.mp4", question="Which way does it move?",
                          options=("left", "right", "up"), answer_index=1, task="direction")


def _scored(model, example_id, frames, options):
    """A scored example whose video is given as frames (the caller holds a video_bank.scope)."""
    return score_example(model, _example(example_id), options, video=frames)


def test_screen_ranks_and_signs_exact_single_layer_knockouts_on_a_tiny_model(model):
    """From the second layer on the screen ranks and signs the exact effects; in the first layer it may not:
    blocking most of a row's mass there (the question loses the video) is a large change that two more
    nonlinear layers amplify (documented in docs/methods.md, "Gradient screening of knockouts")."""
    frames = np.random.RandomState(1).randint(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    options = FlowOptions(presets=ALL_PRESETS, samples="all", num_frames=3)
    with model.video_bank.scope():
        screen = knockout_attribution(model, [_scored(model, "a", frames, options)], options, exact=True, progress=False)
    assert isinstance(screen, KnockoutAttribution)
    assert screen.estimates.shape == screen.exact.shape == (1, 11, 3)
    estimates, exact = screen.estimates[0], screen.exact[0]
    assert np.isfinite(estimates).all() and np.isfinite(exact).all()
    assert screen.spearman()["mean"] > 0.5
    later_estimates, later_exact = estimates[:, 1:].ravel(), exact[:, 1:].ravel()
    assert spearmanr(later_estimates, later_exact).statistic > 0.9
    large = np.abs(later_exact) > 2.0  # percent
    assert large.sum() >= 5 and (np.sign(later_estimates[large]) == np.sign(later_exact[large])).all()


def test_screen_skips_flows_without_edges_and_windows_sum_the_layers(model):
    one_frame = np.random.RandomState(2).randint(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    options = FlowOptions(presets=("cross-frame", "vql-to-ql"), samples="all", num_frames=1)
    with model.video_bank.scope():
        screen = knockout_attribution(model, [_scored(model, "one-frame", one_frame, options)], options, link="log_prob",
                                      progress=False)
    assert screen.labels[0] == "No cross-frame interactions" and np.isnan(screen.estimates[0, 0]).all()
    assert np.isfinite(screen.estimates[0, 1:]).all()
    np.testing.assert_allclose(screen.window(k=1), screen.estimates)
    two = screen.window(k=2)  # centre l blocks layers l-1, l (clipped): deltas add, then map to percent
    p = np.exp(screen.clean[0])
    expected = (np.exp(screen.clean[0] + screen.deltas[0, 1:, 0] + screen.deltas[0, 1:, 1]) / p - 1) * 100
    np.testing.assert_allclose(two[0, 1:, 1], expected)
    assert screen.ranking()[0][2] == np.nanmin(screen.mean())
    inverse = screen.window(k=3, style="inverse")  # centre L2's window covers all 3 layers: blocks none, skipped
    assert np.isnan(inverse[0, 1:, 1]).all() and np.isfinite(inverse[0, 1:, [0, 2]]).all()


def test_scored_examples_and_the_answer_metric_are_accepted(model):
    frames = np.random.RandomState(3).randint(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    options = FlowOptions(presets=("vql-to-ql",), layers=(1,), num_frames=2, samples="all")
    with model.video_bank.scope():
        scored = _scored(model, "s", frames, options)
        screen = knockout_attribution(model, [scored], options, metric="answer", progress=False)
        (delta,), _ = knockout_estimates(model, scored.prepared, [KnockoutSpec.of([("video", "question")], [1])],
                                          scored.answer_token)
    assert screen.layers == (1,) and screen.deltas.shape == (1, 4, 1)
    assert screen.deltas[0, 0, 0] == pytest.approx(float(delta[1]))
    with pytest.raises(ValueError, match="needs layers \\[0, 2\\] that were not estimated"):
        screen.window(k=3)


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "logit"}, "metric='logit'; valid: true, answer"),
    ({"link": "probability"}, "link='probability'; valid: log_odds, log_prob"),
    ({"options": {"presets": ["vql-to-ql"]}}, "options must be FlowOptions, got dict"),
])
def test_bad_arguments_raise_one_clear_line(model, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", "\\[").replace("(", "\\(")):
        knockout_attribution(model, [_example("x")], **kwargs)


def test_screen_of_the_built_in_model_on_synthetic_examples(tmp_path):
    from tl_video.data import generate_benchmark

    toy = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
    examples = generate_benchmark(tmp_path, n_per_task=1, tasks=["moving_direction"], seed=0)
    screen = knockout_attribution(toy, examples, FlowOptions(presets=("vql-to-ql",), samples="all"), progress=False)
    assert screen.example_ids == (examples[0].example_id,) and screen.deltas.shape == (1, 4, toy.cfg.n_layers)
    assert screen.labels == ["Video↛Question", "Video↛Last", "Question↛Last", "Last↛Last"]
    assert np.isfinite(screen.estimates).all() and (screen.estimates >= -100.0).all()
    data = screen.to_json()
    assert data["link"] == "log_odds" and data["exact"] is None and len(data["deltas"][0]) == 4
