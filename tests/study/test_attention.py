"""The attention-map pipeline on the built-in model: records against hand computations, read-back, resume."""

from __future__ import annotations

import pytest
import torch

from tl_video.analyses.attention import AttentionOptions, AttentionResult, default_knockout_layers, run_attention
from tl_video.analyses.scoring import StudyOptions, score_example
from tl_video.interventions.knockout import knockout_hooks
from tl_video.interventions.presets import cross_frame

OPTIONS = AttentionOptions(layers=(1, 3))


@pytest.fixture(scope="module")
def examples(study_examples):
    return study_examples[:2]


@pytest.fixture(scope="module")
def attention_run(toy_model, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("attention")
    return out, run_attention(toy_model, examples, OPTIONS, out_dir=out, progress=False)


def test_default_knockout_is_cross_frame_in_the_papers_early_window():
    assert default_knockout_layers(32) == tuple(range(9)) and default_knockout_layers(6) == (0, 1)
    assert default_knockout_layers(2) == (0,) and default_knockout_layers(1) == (0,)


def test_records_equal_the_hand_computation(toy_model, examples, attention_run):
    _, result = attention_run
    example = examples[0]
    scored = score_example(toy_model, example, StudyOptions())
    layout = scored.prepared.layout
    queries, keys = layout.positions("question"), layout.positions("video")
    (spec,) = cross_frame(layout, (0, 1))
    for condition, hooks in (("baseline", []), ("knockout", knockout_hooks(spec, layout, toy_model.cfg.n_layers))):
        record = next(r for r in result.attention_records(condition) if r["example_id"] == example.example_id)
        assert record["layers"] == [1, 3]
        with torch.no_grad(), toy_model.hooks(fwd_hooks=hooks):
            _, cache = toy_model.run_with_cache(scored.prepared.tokens)
        for row, layer in enumerate(record["layers"]):
            pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0][:, queries][:, :, keys]  # [head, query, video]
            per_token = pattern.mean(0)
            assert torch.allclose(torch.tensor(record["token_maps"][row]), per_token, atol=1e-6)
            assert torch.allclose(torch.tensor(record["group_map"][row]), per_token.mean(0), atol=1e-6)
            assert abs(record["video_mass"][row] - float(per_token.sum(-1).mean())) < 1e-6
    knocked = next(r for r in result.attention_records("knockout") if r["example_id"] == example.example_id)
    assert knocked["spec"]["blocks"] == spec.to_json()["blocks"]
    assert knocked["label"] == "No cross-frame interactions in L1–L2"
    assert len(knocked["query_tokens"]) == queries.numel()


def test_per_token_maps_only_for_the_first_example_and_summaries_carry_n(attention_run):
    _, result = attention_run
    assert [r["token_maps"] is not None for r in result.attention_records("baseline")] == [True, False]
    assert [m.n for m in result.video_mass("knockout")] == [2, 2]
    assert result.mean_group_map("baseline").shape == (2, 8)
    assert len(result.findings()) == 2


def test_result_reads_back_from_disk(attention_run):
    out, result = attention_run
    again = AttentionResult.read(out)
    assert again.records == result.records and again.header == result.header
    assert again.options.knockout_layers == (0, 1)


def test_resume_after_a_partial_run_writes_the_same_records(toy_model, examples, attention_run, tmp_path):
    _, full = attention_run
    run_attention(toy_model, examples[:1], OPTIONS, out_dir=tmp_path, progress=False)
    resumed = run_attention(toy_model, examples, OPTIONS, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.records == full.records


def test_bad_options_fail_in_one_line():
    with pytest.raises(ValueError, match="heads='median'; valid: mean, max"):
        AttentionOptions(heads="median")
    with pytest.raises(ValueError, match="not both"):
        AttentionOptions(knockout={"blocks": []}, knockout_layers=(0,))


def test_figures_show_the_maps_of_a_fixed_result_with_frame_boundaries():
    import numpy as np

    from tl_video.analyses.records import RunHeader
    from tl_video.plots.attention import LOG_EPSILON, attention_maps, figures, token_attention_maps, video_mass_by_layer

    options = AttentionOptions(layers=(0, 1), knockout_layers=(0,))
    header = RunHeader(analysis="attention", model_id="fixed", model_config_hash="0", dataset="fixed", options=options.to_json(), seed=0)
    grid = [[0, 0, 0], [1, 0, 0], [2, 0, 0]]

    def record(condition, group, mass):
        return {"key": f"attention/{condition}/a", "kind": "attention", "condition": condition, "example_id": "a", "task": "t",
                "spec": None, "label": "baseline" if condition == "baseline" else "No cross-frame interactions in L1",
                "query": "question", "heads": "mean", "layers": [0, 1], "video_grid": grid, "frame_unit": "frame",
                "group_map": group, "video_mass": mass, "query_tokens": ["Q", " move"],
                "token_maps": [[g, [2 * v for v in g]] for g in group], "token_video_mass": [[m, m] for m in mass]}

    base = [[0.1, 0.2, 0.3], [0.0, 0.5, 0.25]]
    knocked = [[0.1, 0.2, 0.3], [0.0, 0.25, 0.5]]
    result = AttentionResult(header=header, records=[record("baseline", base, [0.6, 0.75]), record("knockout", knocked, [0.6, 0.75])])
    linear = attention_maps(result, log_scale=False)
    assert np.allclose(linear.data[0].z, base) and np.allclose(linear.data[1].z, knocked)
    assert np.allclose(linear.data[2].z, np.subtract(knocked, base)) and linear.data[2].zmid == 0
    boundaries = [shape.x0 for shape in linear.layout.shapes if shape.xref == "x"]
    assert boundaries == [0.5, 1.5]  # between frames 1|2 and 2|3 of the first panel
    logged = attention_maps(result)
    assert np.allclose(logged.data[0].z, np.log10(np.asarray(base) + LOG_EPSILON))
    tokens = token_attention_maps(result, log_scale=False)
    assert np.allclose(tokens.data[0].z, [[0.2, 0.4, 0.6], [0.0, 1.0, 0.5]])  # the word token " move" (index 1)
    mass = video_mass_by_layer(result)
    assert [list(trace.y) for trace in mass.data if trace.mode == "lines+markers"] == [[0.6, 0.75], [0.6, 0.75]]
    assert set(figures(result)) == {"attention_maps", "attention_video_mass", "attention_token_maps"}


def test_a_given_knockout_spec_replaces_the_default(toy_model, examples):
    from tl_video.interventions.knockout import KnockoutSpec

    spec = KnockoutSpec.of([("video", "question")], [0], label="Video↛Question in L1")
    result = run_attention(toy_model, examples[:1], AttentionOptions(layers=(0,), knockout=spec, token_map_examples=0), progress=False)
    (knocked,) = result.attention_records("knockout")
    assert knocked["label"] == "Video↛Question in L1" and knocked["spec"] == spec.to_json()
    assert knocked["group_map"] == [[0.0] * 8] and knocked["video_mass"] == [0.0] and knocked["token_maps"] is None
    assert result.options.knockout_layers is None
