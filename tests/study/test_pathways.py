"""Effective pathways: records equal a hand knockout run, keeping everything is the identity, random blocking
matches the pathway's edge count per layer, ranges come from a flow result; read, resume, figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tl_video.analyses.pathways import (
    ANALYSIS,
    FLOWS,
    PathwayOptions,
    PathwayResult,
    example_seed,
    layer_span_text,
    parse_layers,
    pathway_spec,
    ranges_from_flow,
    run_pathways,
)
from tl_video.analyses.records import RunHeader
from tl_video.analyses.scoring import score_example
from tl_video.interventions.knockout import KnockoutSpec, blocked_edges_by_layer, knockout_hooks
from tl_video.interventions.presets import random_baseline_for
from tl_video.plots.pathways import dodged, edges_vs_accuracy, figures, pathway_table

RANGES = {"cross_frame": "L1-L3", "video_to_question": "L2-4", "question_to_last": "L3–L6"}
N_EXAMPLES = 3


@pytest.fixture(scope="module")
def examples(study_examples):
    return study_examples[: 2 * N_EXAMPLES : 2]  # one example of each of the first three tasks


@pytest.fixture(scope="module")
def options():
    return PathwayOptions(**RANGES)


@pytest.fixture(scope="module")
def run_dir(toy_model, examples, options, tmp_path_factory):
    out = tmp_path_factory.mktemp("pathways")
    run_pathways(toy_model, examples, options, out_dir=out, progress=False)
    return out


@torch.no_grad()
def hand_probabilities(model, prepared, spec) -> torch.Tensor:
    with model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, model.cfg.n_layers)):
        return model(prepared.tokens)[0, -1].float().softmax(-1)


def test_a_record_equals_the_same_knockout_run_by_hand(toy_model, examples, options, run_dir):
    result = PathwayResult.read(run_dir)
    example = examples[0]
    scored = score_example(toy_model, example, options)
    n = toy_model.cfg.n_layers
    spec = pathway_spec(scored.prepared.layout, n, result.ranges)
    random_spec = random_baseline_for(spec, scored.prepared.layout, n, seed=example_seed(options.seed, example.example_id))
    for condition, blocked in (("pathways", spec), ("random", random_spec)):
        record = next(r for r in result.records if r.get("key") == f"{condition}/{example.example_id}")
        probabilities = hand_probabilities(toy_model, scored.prepared, blocked)
        assert record["spec"] == blocked.to_json()
        assert record["answer_token"] == int(probabilities.argmax())
        assert record["correct"] == (int(probabilities.argmax()) == scored.true_token)
        np.testing.assert_allclose(record["p_true"], float(probabilities[scored.true_token]), atol=1e-5)
        for letter, token in scored.letters.items():
            np.testing.assert_allclose(record["letter_probabilities"][letter], float(probabilities[token]), atol=1e-5)
    full = next(r for r in result.records if r.get("key") == f"full_attention/{example.example_id}")
    np.testing.assert_allclose(full["p_true"], float(hand_probabilities(toy_model, scored.prepared, KnockoutSpec())
                                                     [scored.true_token]), atol=1e-5)
    assert full["edges"]["suppressed"] == 0


def test_random_blocking_removes_as_many_edges_as_the_pathway_in_every_layer(toy_model, examples, options, run_dir):
    result = PathwayResult.read(run_dir)
    n = toy_model.cfg.n_layers
    for example in examples:
        pathway = next(r for r in result.records if r.get("key") == f"pathways/{example.example_id}")
        random = next(r for r in result.records if r.get("key") == f"random/{example.example_id}")
        assert random["edges"]["suppressed_per_layer"] == pathway["edges"]["suppressed_per_layer"]
        assert sum(pathway["edges"]["suppressed_per_layer"]) > 0
        # counted independently: the random spec's compiled masks, inside the causal triangle, from the video on
        layout = score_example(toy_model, example, options).prepared.layout
        spec = pathway_spec(layout, n, result.ranges)
        random_spec = random_baseline_for(spec, layout, n, seed=random["random_seed"])
        start = int(layout.positions("video").min())
        causal = torch.ones(layout.n_tokens, layout.n_tokens, dtype=torch.bool).tril()
        blocked = blocked_edges_by_layer(random_spec, layout, n)
        for layer in range(n):
            matrix = blocked.get(layer, torch.zeros_like(causal))
            assert int(matrix.sum()) == int((matrix & causal).sum()) == pathway["edges"]["suppressed_per_layer"][layer]
            assert not matrix[:start].any() and not matrix[:, :start].any()
    assert result.edges("random").kept_total == result.edges("pathways").kept_total


def test_pathways_that_keep_every_flow_in_every_layer_equal_full_attention(toy_model, examples):
    every = list(range(toy_model.cfg.n_layers))
    options = PathwayOptions(cross_frame=every, video_to_question=every, question_to_last=every,
                             video_to_last=every, last_to_last=every)
    result = run_pathways(toy_model, examples[:2], options, progress=False)
    assert result.edges("pathways").suppressed_total == 0
    for condition in ("pathways", "random"):
        assert result.accuracy(condition).n_correct == result.accuracy("full_attention").n_correct
        full = {r["example_id"]: r["p_true"] for r in result.records if r.get("condition") == "full_attention"}
        for record in (r for r in result.records if r.get("condition") == condition):
            np.testing.assert_allclose(record["p_true"], full[record["example_id"]], atol=1e-5)


def test_result_reads_back_with_denominators_and_findings(examples, run_dir):
    result = PathwayResult.read(run_dir)
    assert result.header.analysis == ANALYSIS
    assert result.ranges == {"cross_frame": (0, 1, 2), "video_to_question": (1, 2, 3), "question_to_last": (2, 3, 4, 5),
                             "video_to_last": (), "last_to_last": ()}
    assert result.range_source == "given"
    n = result.baseline()["n_selected"]
    assert [result.accuracy(c).n for c in ("full_attention", "pathways", "random")] == [n, n, n]
    assert 0 < result.edges("pathways").kept_percent < 100
    findings = result.findings()
    assert len(findings) == 2 and all(f.n == n for f in findings)
    assert "cross-frame L1–L3; video→question L2–L4; question→last L3–L6" in findings[0].sentence


def test_resume_after_an_interrupted_run_writes_the_same_records(toy_model, examples, options, run_dir, tmp_path):
    lines = (run_dir / f"{ANALYSIS}.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / f"{ANALYSIS}.jsonl").write_text("".join(lines[:4]) + lines[4][:40])  # stops inside a record
    resumed = run_pathways(toy_model, examples, options, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.records == PathwayResult.read(run_dir).records
    assert (tmp_path / f"{ANALYSIS}.jsonl").read_text() == "".join(lines)


def test_ranges_are_found_from_an_information_flow_result(toy_model, examples, tmp_path):
    from tl_video.analyses.flow import FlowOptions, effective_ranges, run_flow

    flow = run_flow(toy_model, examples[:1], FlowOptions(presets=("cross-frame", "vql-to-ql")), progress=False)
    result = run_pathways(toy_model, examples[:1], PathwayOptions(), out_dir=tmp_path, progress=False, flow_result=flow)
    found = effective_ranges(flow)
    expected = {
        "cross_frame": tuple(found["No cross-frame interactions"]), "video_to_question": tuple(found["Video↛Question"]),
        "question_to_last": tuple(found["Question↛Last"]),
    }
    assert expected == ranges_from_flow(flow)
    assert result.ranges == expected | {"video_to_last": (), "last_to_last": ()}
    assert result.range_source == "flow" and "grouped in bins of 1" in result.range_rule and "below -5%" in result.range_rule
    assert PathwayResult.read(tmp_path).ranges == result.ranges
    with pytest.raises(ValueError, match="no range for cross_frame, video_to_question, question_to_last"):
        run_pathways(toy_model, examples[:1], PathwayOptions(), progress=False)


def test_ranges_parse_from_prose_and_lists_and_refuse_bad_input():
    assert parse_layers("L6–15", "r") == tuple(range(5, 15))
    assert parse_layers("L1-L4, L6", "r") == (0, 1, 2, 3, 5)
    assert parse_layers([3, 1, 1], "r") == (1, 3) and parse_layers("", "r") == ()
    assert PathwayOptions(cross_frame=[0, 2]).to_json()["cross_frame"] == [0, 2]
    assert layer_span_text((0, 1, 2, 5)) == "L1–L3, L6"
    with pytest.raises(ValueError, match="cross_frame='6-15': write 1-indexed inclusive spans"):
        PathwayOptions(cross_frame="6-15")
    with pytest.raises(ValueError, match="span 'L0-3' must run from L1"):
        PathwayOptions(video_to_question="L0-3")
    with pytest.raises(ValueError, match="layer -1 must be a non-negative integer"):
        PathwayOptions(question_to_last=[-1])
    from tl_video.analyses.pathways import resolve_ranges

    with pytest.raises(ValueError, match=r"layers \[6\] \(0-indexed\) are out of range for a model with 6 layers"):
        resolve_ranges(PathwayOptions(cross_frame=[6], video_to_question=[1], question_to_last=[1]), 6)
    with pytest.raises(ValueError, match="video_to_question: it is empty; it must name at least one layer"):
        resolve_ranges(PathwayOptions(cross_frame=[], video_to_question=[], question_to_last=[1]), 6)


def fixed_result() -> PathwayResult:
    """Four examples; full attention 4/4, pathways 3/4 keeping 40% of edges, random 1/4."""
    options = {"samples": "correct", "ranges": {name: [1, 2] for name in FLOWS}, "range_source": "given",
               "range_rule": "given by the user"}
    header = RunHeader(analysis=ANALYSIS, model_id="m", model_config_hash="h", dataset="d", options=options, seed=0,
                       tl_video_version="0")
    records = []
    for index in range(4):
        records.append({"key": f"baseline/e{index}", "kind": "baseline", "correct": True, "selected": True})
        for condition, correct, kept in (("full_attention", True, 100), ("pathways", index < 3, 40), ("random", index == 0, 40)):
            records.append({"key": f"{condition}/e{index}", "kind": ANALYSIS, "condition": condition, "example_id": f"e{index}",
                            "task": "t", "correct": correct, "p_true": 0.9 if correct else 0.1,
                            "letter_probabilities": dict.fromkeys("ABCD", 0.25),
                            "edges": {"kept": kept, "suppressed": 100 - kept, "baseline": 100}})
    return PathwayResult(header=header, records=records)


def test_table_and_edge_accuracy_figures_from_a_fixed_result():
    result = fixed_result()
    rows = result.table()
    assert [(r["condition"], r["edges_kept_percent"], r["n_correct"], r["n"]) for r in rows] == [
        ("full attention", 100.0, 4, 4), ("effective pathways", 40.0, 3, 4), ("random blocking", 40.0, 1, 4)]
    conditions, ranges = result.tables().values()
    assert [row["accuracy"] for row in conditions] == ["100.0% (4/4)", "75.0% (3/4)", "25.0% (1/4)"]
    assert [row["kept in (1-indexed)"] for row in ranges] == ["L2–L3"] * 3
    table = pathway_table(result).data[0]
    assert list(table.cells.values[0]) == ["full attention", "effective pathways", "random blocking"]
    assert list(table.cells.values[1]) == ["100.0%", "40.0%", "40.0%"]
    assert list(table.cells.values[3]) == ["100.0% (4/4)", "75.0% (3/4)", "25.0% (1/4)"]

    fig = edges_vs_accuracy(result)
    assert [trace.name for trace in fig.data] == ["full attention", "effective pathways", "random blocking"]
    assert [trace.y[0] for trace in fig.data] == [100.0, 75.0, 25.0]
    assert dodged([100.0, 40.0, 40.0], 2.0) == [100.0, 39.0, 41.0]
    step = 0.025 * (102.5 - 30.0)  # the axis starts at the tens below 40 - 8
    assert [trace.x[0] for trace in fig.data] == pytest.approx([100.0, 40.0 - step / 2, 40.0 + step / 2])
    assert fig.layout.xaxis.range == (30.0, 102.5)
    assert fig.layout.shapes[0].y0 == 25.0  # chance: 1 of 4 options
    assert [trace.customdata[0] for trace in fig.data] == [100.0, 40.0, 40.0]
    assert fig.data[1].error_y.array[0] >= 0 and fig.data[1].error_y.arrayminus[0] >= 0
    assert fig.layout.xaxis.title.text == "attention edges kept (%)"
    assert "n = 4 answered correctly at baseline, of 4 examples" in fig.layout.annotations[0].text
    assert list(figures(result)) == ["pathways_table", "pathways_edges_accuracy"]


def test_retained_accuracy_counts_only_examples_correct_with_full_attention():
    result = fixed_result()
    records = [dict(r, correct=False) if r["key"] == "full_attention/e3" else r for r in result.records]
    result = PathwayResult(header=RunHeader(**{**result.header.__dict__, "options": {**result.header.options, "samples": "all"}}),
                           records=records)
    assert (result.accuracy("pathways").n_correct, result.accuracy("pathways").n) == (3, 4)
    retained = result.retained("pathways")
    assert (retained.n_correct, retained.n) == (3, 3) and retained.ci.mean == 1.0
    assert (result.retained("random").n_correct, result.retained("random").n) == (1, 3)
    table = pathway_table(result).data[0]
    assert table.header.values[-1] == "<b>retained</b>"
    assert list(table.cells.values[-1]) == ["100% (3/3)", "100% (3/3)", "33% (1/3)"]
    assert "n = 4 examples" in pathway_table(result).layout.annotations[0].text
