"""The information-flow pipeline on the built-in model: records equal a hand-run knockout, read back,
resume after a torn write, window clipping, skipped configurations, per-task curves, findings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tl_video.analyses.flow import (
    FlowOptions, FlowResult, default_bin_size, default_window_k, effective_ranges, holm, run_flow,
)
from tl_video.analyses.records import RunHeader
from tl_video.interventions.knockout import KnockoutSpec, knockout_hooks
from tl_video.interventions.presets import preset
from tl_video.interventions.windows import window_layers
from tl_video.prompts.prepare import prepare_example

SMALL = FlowOptions(presets=("cross-frame", "vql-to-ql"))  # every layer, centre window, k = 2 of 6


@pytest.fixture(scope="module")
def four_examples(study_examples):
    """Two tasks x two examples (moving_direction, action_sequence)."""
    return study_examples[:4]


@pytest.fixture(scope="module")
def flow_run(toy_model, four_examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("flow")
    return out, run_flow(toy_model, four_examples, SMALL, out_dir=out, progress=False)


def test_record_equals_knockout_by_hand(toy_model, four_examples, flow_run):
    _, result = flow_run
    example = four_examples[1]
    record = next(r for r in result.records if r.get("kind") == "flow" and r["example_id"] == example.example_id
                  and r["label"] == "Video↛Question" and r["center"] == 2)
    prepared = prepare_example(toy_model, example)
    layers = window_layers(2, toy_model.cfg.n_layers, 2, "center")
    spec = preset("vql-to-ql", prepared.layout, layers)[0]
    with torch.no_grad():
        base = toy_model(prepared.tokens)[0, -1].float().softmax(-1)
        with toy_model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, toy_model.cfg.n_layers)):
            new = toy_model(prepared.tokens)[0, -1].float().softmax(-1)
    answer = int(base.argmax())
    true = toy_model.tokenizer.convert_tokens_to_ids(example.answer_letter)
    assert record["layers"] == [1, 2] and record["spec"] == spec.to_json()
    assert record["answer_token"] == answer and record["true_token"] == true
    expected = float((new[true] - base[true]) / base[true] * 100)
    assert record["change_true"] == pytest.approx(expected, abs=1e-3)
    assert record["change_answer"] == pytest.approx(float((new[answer] - base[answer]) / base[answer] * 100), abs=1e-3)
    assert record["new_token"] == int(new.argmax()) and record["new_correct"] == (int(new.argmax()) == true)
    assert record["n_blocked_edges"] == 2 * len(prepared.layout.positions("video")) * len(prepared.layout.positions("question"))


def test_result_reads_back(flow_run):
    out, result = flow_run
    again = FlowResult.read(out)
    assert again.records == json.loads(json.dumps(result.records)) and again.header == result.header
    assert again.curve("Video↛Question").to_json() == result.curve("Video↛Question").to_json()
    assert [f.to_json() for f in again.findings()] == [f.to_json() for f in result.findings()]
    lines = (out / "flow.jsonl").read_text().splitlines()
    assert len(lines) == 1 + len(result.records)  # header + one record per example x config
    assert result.baseline() == {"n_examples": 4, "n_correct": 4, "n_selected": 4}
    assert len(result.evaluated()) == 4 * 6 * 5 and not result.skipped()


def test_curves_per_task_and_pooled(flow_run, four_examples):
    _, result = flow_run
    assert result.tasks() == sorted({e.task for e in four_examples})
    pooled = result.curve("Question↛Last", metric="answer")
    assert pooled.layers == tuple(range(6)) and [s.n for s in pooled.stats] == [4] * 6
    for layer, values in zip(pooled.layers, pooled.values):
        assert pooled.stats[layer].mean == pytest.approx(np.mean(list(values.values())))
        assert pooled.stats[layer].low <= pooled.stats[layer].mean <= pooled.stats[layer].high
    for task in result.tasks():
        curve = result.curve("Question↛Last", metric="answer", task=task)
        ids = {e.example_id for e in four_examples if e.task == task}
        assert all(set(v) == ids for v in curve.values)
        assert all(curve.values[i].items() <= pooled.values[i].items() for i in range(6))
    accuracy = result.accuracy("No cross-frame interactions", task=result.tasks()[0])
    assert accuracy.n == (2,) * 6 and accuracy.n_selected == 2 and accuracy.baseline_accuracy == 1.0


def test_resume_after_torn_write_equals_uninterrupted(toy_model, study_examples, tmp_path):
    options = FlowOptions(presets=("vql-to-ql",), specs={"Video↛Answer prompt": [("video", "answer_prompt")]}, layers=(1, 4))
    examples = study_examples[4:6]
    whole = run_flow(toy_model, examples, options, out_dir=tmp_path / "whole", progress=False)
    assert len(whole.records) == 2 + 2 * 2 * 5
    assert "custom" in whole.presets() and whole.curve("Video↛Answer prompt").n == 2
    part = tmp_path / "part"
    part.mkdir()
    lines = (tmp_path / "whole" / "flow.jsonl").read_text().splitlines(keepends=True)
    torn = lines[5][: len(lines[5]) // 2]  # header, baseline, 3 records of example 1, half a 4th line
    (part / "flow.jsonl").write_text("".join(lines[:5]) + torn)
    with pytest.raises(FileExistsError, match="resume=True"):
        run_flow(toy_model, examples, options, out_dir=part, progress=False)
    resumed = run_flow(toy_model, examples, options, out_dir=part, resume=True, progress=False)
    assert resumed.records == whole.records
    assert FlowResult.read(part).records == FlowResult.read(tmp_path / "whole").records
    shutil.rmtree(part)


def test_window_larger_than_model_is_clipped_with_a_note(toy_model, study_examples):
    options = FlowOptions(presets=("vql-to-ql",), windows=("center", "inverse"), window_k=50, layers=(0, 3))
    with pytest.warns(UserWarning, match="k=50 is larger than the model's 6 layers; clipped to k=6"):
        result = run_flow(toy_model, study_examples[:1], options, progress=False)
    assert result.window_k == 6 and "clipped to k=6" in result.notes[0]
    layers = {(r["window"], r["center"]): r["layers"] for r in result.records if r.get("kind") == "flow"}
    assert layers == {("center", 0): [0, 1, 2], ("center", 3): [0, 1, 2, 3, 4, 5],
                      ("inverse", 0): [3, 4, 5], ("inverse", 3): []}
    skipped = result.skipped()  # the inverse of a window covering the whole model blocks nothing
    assert len(skipped) == 4 and all(r["window"] == "inverse" and r["center"] == 3 for r in skipped)
    assert all("blocks no layer" in r["reason"] for r in skipped)
    assert (default_window_k(32), default_window_k(6), default_window_k(1)) == (9, 2, 1)
    assert (default_bin_size(32), default_bin_size(6)) == (5, 1)


def test_one_frame_video_skips_cross_frame_with_its_reason(toy_model, study_examples):
    options = FlowOptions(num_frames=1, samples="all", presets=("cross-frame", "vql-to-ql"), layers=(0,))
    result = run_flow(toy_model, study_examples[:1], options, progress=False)
    skipped = result.skipped()
    assert [r["label"] for r in skipped] == ["No cross-frame interactions"] and "1-frame" in skipped[0]["reason"]
    assert len(result.evaluated()) == 4
    assert result.curve("No cross-frame interactions").n == 0
    assert result.accuracy("No cross-frame interactions").n == (0,)


def _synthetic_result(changes: dict[str, np.ndarray]) -> FlowResult:
    """A FlowResult built from fixed per-example changes [example, layer] (no model)."""
    n_examples, n_layers = next(iter(changes.values())).shape
    header = RunHeader(analysis="flow", model_id="m", model_config_hash="h", dataset="d", options={}, seed=0,
                       tl_video_version="0", extra={"n_layers": n_layers, "window_k": 1, "notes": []})
    records = [{"key": f"baseline/e{i}", "kind": "baseline", "example_id": f"e{i}", "task": "t", "correct": True,
                "selected": True} for i in range(n_examples)]
    for label, values in changes.items():
        for i in range(n_examples):
            for layer in range(n_layers):
                records.append({"key": f"flow/e{i}/p/{label}/center/L{layer}", "kind": "flow", "example_id": f"e{i}",
                                "task": "t", "preset": "p", "label": label, "window": "center", "center": layer,
                                "skipped": False, "change_true": float(values[i, layer]),
                                "change_answer": float(values[i, layer]), "new_correct": values[i, layer] > -50})
    return FlowResult(header, records)


def test_findings_name_significant_ranges_and_flat_flows():
    rng = np.random.default_rng(0)
    drop = rng.normal(0, 1, (12, 6))
    drop[:, 1:4] -= 40  # L2-L4
    flat = rng.normal(0, 0.1, (12, 6))
    result = _synthetic_result({"Video↛Question": drop, "Video↛Last": flat})
    findings = result.findings()
    assert len(findings) == 2
    assert findings[0].sentence.startswith("Blocking Video↛Question in L2–L4 lowers the true option's probability by 40%")
    assert findings[0].p_value < 0.05 and findings[0].n == 12 and "Holm" in findings[0].test
    assert "Video↛Last" in findings[1].sentence and "no layer is significant" in findings[1].sentence
    assert effective_ranges(result) == {"Video↛Question": [1, 2, 3], "Video↛Last": []}
    assert effective_ranges(result, bin_size=2) == {"Video↛Question": [0, 1, 2, 3], "Video↛Last": []}
    assert effective_ranges(result, bin_size=2, alpha=0.05) == {"Video↛Question": [1, 2, 3], "Video↛Last": []}


def test_holm_matches_the_step_down_rule():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([0.01, float("nan")])[1])


@pytest.mark.parametrize("kwargs, message", [
    ({"presets": ("cross_frame",)}, "unknown"),
    ({"windows": ("middle",)}, "valid: center"),
    ({"window_k": 0}, "positive integer"),
    ({"specs": {"x": "video"}}, "edges must be a list"),
    ({"specs": {"x": [("video",)]}}, "selector pair"),
    ({"presets": ()}, "nothing to sweep"),
])
def test_bad_options_are_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowOptions(**kwargs)


def test_figures_show_means_bands_reference_lines_and_denominators():
    from tl_video.plots.flow import accuracy_under_knockout, figures, flow_curves, flow_curves_by_task
    from tl_video.plots.style import FLOW_STYLES

    rng = np.random.default_rng(1)
    drop = rng.normal(0, 1, (6, 4))
    drop[:, 1] -= 60
    result = _synthetic_result({"Video↛Question": drop, "Video↛Last": rng.normal(0, 0.1, (6, 4))})
    fig = flow_curves(result, "p")
    means = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in means] == ["Video↛Question", "Video↛Last"] and len(fig.data) == 6
    assert means[0].line.color == FLOW_STYLES["Video↛Question"][0] and means[1].line.dash == FLOW_STYLES["Video↛Last"][1]
    assert list(means[0].y) == pytest.approx(list(drop.mean(0)))
    band_high, band_low = fig.data[0], fig.data[1]
    assert band_low.fill == "tonexty" and all(h >= m >= l for h, m, l in zip(band_high.y, means[0].y, band_low.y))
    assert list(means[0].x) == [0, 1, 2, 3] and list(fig.layout.xaxis.ticktext) == ["L1", "L2", "L3", "L4"]
    assert any(shape.y0 == 0 and shape.y1 == 0 for shape in fig.layout.shapes)
    assert any("n = 6" in a.text for a in fig.layout.annotations)
    accuracy = accuracy_under_knockout(result, "p")
    assert list(accuracy.data[0].y) == [100.0, 0.0, 100.0, 100.0]  # new_correct = change > -50
    assert any(shape.y0 == 100 for shape in accuracy.layout.shapes)
    assert any("no knockout: 6 of 6" in a.text for a in accuracy.layout.annotations)
    assert any("n = 6" in a.text and "per layer" in a.text for a in accuracy.layout.annotations)
    assert set(figures(result)) == {"flow_p_center", "accuracy_p_center"}  # one task: no small multiples
    by_task = flow_curves_by_task(result, "p")
    assert [a.text for a in by_task.layout.annotations][:1] == ["t (n = 6)"]
    with pytest.raises(ValueError, match=r"no flow records of preset 'user'.*\['p'\].*'custom'"):
        flow_curves(result, "user")  # was an empty figure
    with pytest.raises(ValueError, match="no flow records of window style 'inverse'"):
        flow_curves(result, "p", window="inverse")
