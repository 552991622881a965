"""The exact sweep engine equals the plain full forward (probabilities within 1e-5 in fp32).

Every preset x every window style x every centre layer, plus effective-pathway and random
blocking specs, on LLaVA-NeXT-Video (1D RoPE; also a 5-layer GQA variant) and Qwen2.5-VL
(M-RoPE, 3D position ids), and Qwen3-VL's deepstack injections on the vql-to-ql sweep. The plain
path is the reference: one full forward per spec under `knockout_hooks`.
"""

from __future__ import annotations

import pytest
import torch

import tl_video
from tests.conftest import random_video
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.analyses.sweep_engine import start_point, sweep_work
from tl_video.interventions import blocked_edges_by_layer
from tl_video.interventions.knockout import KnockoutSpec
from tl_video.interventions.presets import PRESETS, effective_pathway_spec, preset, random_blocking_spec
from tl_video.interventions.windows import WINDOW_STYLES, window_layers
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_llava_next_video, save_tiny_qwen2_5_vl, save_tiny_qwen3_vl

TOLERANCE = 1e-5


def prepared_input(model):
    question = multiple_choice_prompt("Where does the square go?", ["left", "right", "up", "down"], answer_index=2)
    return model.prepare(video=random_video(7), prompt=question, answer_prefix="Best option:(")


def every_sweep_spec(layout, n_layers: int) -> list[KnockoutSpec]:
    """Every preset x window style x centre (k = 2), then effective pathways and random blocking."""
    specs = []
    for style in WINDOW_STYLES:
        for centre in range(n_layers):
            layers = window_layers(centre, n_layers, k=min(2, n_layers), style=style)
            if layers:
                for name in PRESETS:
                    specs.extend(preset(name, layout, layers))
    last = n_layers - 1
    specs.append(effective_pathway_spec(layout, n_layers, cross_frame=[0], video_to_question=[0], question_to_last=[last]))
    specs.append(random_blocking_spec(layout, n_layers, seed=3, total=40))
    specs.append(random_blocking_spec(layout, n_layers, seed=4, per_layer=[5] * n_layers, region="question"))
    specs.append(KnockoutSpec())  # the identity
    return specs


def assert_engine_equals_plain(model, prepared, specs) -> None:
    plain = knockout_probabilities(model, prepared, specs, engine="plain")
    for engine in ("exact", "batched"):
        fast = knockout_probabilities(model, prepared, specs, engine=engine)
        assert plain.shape == fast.shape == (len(specs), model.cfg.d_vocab)
        difference = (plain - fast).abs().amax(dim=-1)
        worst = int(difference.argmax())
        assert float(difference[worst]) <= TOLERANCE, f"{engine} {specs[worst]!r}: max |plain - engine| = {float(difference[worst]):.2e}"
    # the knockouts really change the output (a no-op engine would pass trivially otherwise)
    assert float((plain - plain[-1]).abs().amax()) > 1e-4


@pytest.fixture(scope="module")
def qwen_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep_engine")
    return {
        "qwen2_5_vl": tl_video.HookedVideoTransformer.from_pretrained(save_tiny_qwen2_5_vl(root / "qwen2_5_vl")),
        "qwen3_vl": tl_video.HookedVideoTransformer.from_pretrained(save_tiny_qwen3_vl(root / "qwen3_vl")),
    }


def test_engine_equals_plain_llava_next_video(model):
    prepared = prepared_input(model)
    assert_engine_equals_plain(model, prepared, every_sweep_spec(prepared.layout, model.cfg.n_layers))


def test_engine_equals_plain_deeper_gqa_model(tmp_path):
    """Five layers (start points above layer 1, clean layers below them) with grouped-query attention and biases."""
    folder = save_tiny_llava_next_video(tmp_path / "deep", num_hidden_layers=5, num_key_value_heads=2, attention_bias=True)
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    prepared = prepared_input(model)
    n_layers = model.cfg.n_layers
    specs = [spec for style in ("center", "inverse") for centre in range(1, n_layers, 2)
             for spec in preset("vql-to-ql", prepared.layout, window_layers(centre, n_layers, k=2, style=style))]
    assert_engine_equals_plain(model, prepared, specs + [KnockoutSpec()])


def test_engine_equals_plain_qwen2_5_vl_mrope(qwen_models):
    model = qwen_models["qwen2_5_vl"]
    assert model.cfg.mrope_section is not None
    prepared = prepared_input(model)
    assert_engine_equals_plain(model, prepared, every_sweep_spec(prepared.layout, model.cfg.n_layers))


def test_engine_equals_plain_qwen3_vl_deepstack(qwen_models):
    model = qwen_models["qwen3_vl"]
    prepared = prepared_input(model)
    assert "deepstack" in model.video_bank.extras  # banked by prepare
    n_layers = model.cfg.n_layers
    specs = [spec for centre in range(n_layers) for spec in preset("vql-to-ql", prepared.layout, [centre])]
    specs += preset("cross-frame", prepared.layout, range(n_layers)) + [KnockoutSpec()]
    assert_engine_equals_plain(model, prepared, specs)


def test_start_point_is_the_first_blocked_layer_and_causal_query(model):
    prepared = prepared_input(model)
    layout, n_layers = prepared.layout, model.cfg.n_layers
    last = int(layout.positions("last")[0])
    question = int(layout.positions("question").min())
    (video_to_question, video_to_last, *_) = preset("vql-to-ql", layout, [1])
    assert start_point(blocked_edges_by_layer(video_to_question, layout, n_layers)).query == question
    found = start_point(blocked_edges_by_layer(video_to_last, layout, n_layers))
    assert (found.layer, found.query) == (1, last)
    # edges above the diagonal only (keys after the query) change nothing: no start point
    assert start_point(blocked_edges_by_layer(KnockoutSpec.of([("last", "video")], [0]), layout, n_layers)) is None


def test_exact_engine_numbers_do_not_depend_on_the_other_specs_of_the_call(model):
    """A resumed study recomputes only some specs of an example; it must reproduce the same bits."""
    prepared = prepared_input(model)
    specs = [spec for centre in range(model.cfg.n_layers) for spec in preset("vql-to-ql", prepared.layout, [centre])]
    together = knockout_probabilities(model, prepared, specs)
    for index in (1, len(specs) - 1):
        assert torch.equal(knockout_probabilities(model, prepared, specs[index:])[0], together[index])


def test_auto_falls_back_to_plain_under_other_hooks(model):
    prepared = prepared_input(model)
    specs = preset("vql-to-ql", prepared.layout, [0])
    seen = []
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda resid, hook: seen.append(resid.shape[1]))]):
        knockout_probabilities(model, prepared, specs)
    assert seen == [prepared.tokens.shape[1]] * len(specs)  # full forwards, one per spec
    with pytest.raises(ValueError, match="engine='fast'"):
        knockout_probabilities(model, prepared, specs, engine="fast")


def test_sweep_work_counts_recomputed_and_changed_positions(model):
    """Video↛Last changes only the last position in each layer from the window start: done == minimum.
    Video↛Question recomputes every position from the question on; the minimum counts only the
    question rows in the first blocked layer, then everything from the question on."""
    prepared = prepared_input(model)
    layout, n_layers, n = prepared.layout, model.cfg.n_layers, prepared.layout.n_tokens
    video_to_question, video_to_last, *_ = preset("vql-to-ql", layout, [1])
    work = sweep_work([video_to_last], layout, n_layers)
    assert (work.done, work.minimum, work.clean) == (n_layers - 1, n_layers - 1, n * n_layers)
    question = layout.positions("question")
    first = int(question.min())
    work = sweep_work([video_to_question], layout, n_layers)
    assert work.done == (n - first) * (n_layers - 1)
    assert work.minimum == len(question) + (n - first) * (n_layers - 2)
    assert work.ratio >= 1.0
    assert sweep_work([KnockoutSpec()], layout, n_layers).done == 0


def test_engine_leaves_no_hook_behind(model):
    prepared = prepared_input(model)
    knockout_probabilities(model, prepared, preset("vql-to-ql", prepared.layout, [0]), engine="exact")
    assert not any(point._forward_hooks or point.fwd_hooks for point in model.hook_dict.values())
