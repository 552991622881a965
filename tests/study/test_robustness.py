"""Robustness of a study run, case by case: each bad input ends in a clear error or in a skipped record
with its reason (counted in run.json, the summary and the report), never in a silent wrong number or a
lost result.

Cases: corrupted and truncated videos inside a dataset, empty / non-UTF-8 / duplicated-key annotation
files, duplicated example ids, NaN/inf from an fp16 overflow, an example longer than the model's
context, and a disk that fills up mid-run. (A knockout that leaves a query no key to attend to is
pinned in tests/test_knockout_semantics.py: the row attends to nothing.)
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
from contextlib import contextmanager

import pytest
import torch

from tl_video.analyses.flow import FlowOptions, FlowResult, run_flow
from tl_video.analyses.records import RecordWriteError, read_records
from tl_video.analyses.scoring import skipped_examples
from tl_video.analyses.study import read_run_info, run_study
from tl_video.analyses.study_data import load_examples
from tl_video.data import DatasetError, read_jsonl, read_tomato, read_tvbench
from tl_video.model.hooked_video_transformer import HookedVideoTransformer

PRESETS = ("vql-to-ql",)
FLOW_ONLY = {"analyses": ("flow",), "pipeline_options": {"flow": {"presets": PRESETS}}, "formats": ("html",), "progress": False}


def _three(study_examples):
    """The first example of three tasks (study_examples holds two per task)."""
    return [study_examples[0], study_examples[2], study_examples[4]]


def _flow_records(out_dir):
    return {r["key"]: r for r in read_records(out_dir / "flow.jsonl")[1]}


# ----------------------------------------------------------------------------- videos inside a dataset


def test_corrupted_and_truncated_videos_are_skipped_with_their_reason_and_counted(tmp_path, toy_model, study_examples):
    good, truncated, corrupted = _three(study_examples)
    raw = open(truncated.video, "rb").read()
    (tmp_path / "truncated.mp4").write_bytes(raw[: len(raw) * 2 // 5])  # a cut-off download
    damaged = bytearray(open(corrupted.video, "rb").read())
    damaged[len(damaged) // 3:] = bytes(len(damaged) - len(damaged) // 3)  # zeroed from a third on
    (tmp_path / "corrupted.mp4").write_bytes(bytes(damaged))
    examples = [good, dataclasses.replace(truncated, video=str(tmp_path / "truncated.mp4")),
                dataclasses.replace(corrupted, video=str(tmp_path / "corrupted.mp4"))]

    study = run_study(toy_model, examples, out_dir=tmp_path / "run", **FLOW_ONLY)

    result = study.results["flow"]
    skipped = {r["example_id"]: r for r in skipped_examples(result.records)}
    assert set(skipped) == {truncated.example_id, corrupted.example_id}
    assert all("cannot be read as a video" in r["reason"] and r["error"] == "UnreadableVideoError" for r in skipped.values())
    assert result.baseline()["n_examples"] == 1  # skipped examples count in no denominator
    assert {r["example_id"] for r in result.evaluated()} == {good.example_id}  # the run went on
    assert study.analyses["flow"].n_skipped == 2 and read_run_info(tmp_path / "run")["analyses"]["flow"]["n_skipped"] == 2
    report = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "2 more examples could not be analysed" in report and truncated.example_id in report

    again = run_study(toy_model, examples, out_dir=tmp_path / "run", resume=True, **FLOW_ONLY)  # resume: the skips stay
    assert again.results["flow"].records == result.records


# ----------------------------------------------------------------------------- annotation files


@pytest.mark.parametrize("name", ["examples.jsonl", "blank.jsonl"])
def test_empty_jsonl_file_is_a_clear_error(tmp_path, name):
    path = tmp_path / name
    path.write_text("" if name == "examples.jsonl" else "\n \n")
    with pytest.raises(DatasetError, match=rf"(?s){name}.*field 'file': the file is empty: it holds no records"):
        read_jsonl(path)


def test_empty_json_annotation_files_are_a_clear_error(tmp_path):
    path = tmp_path / "action_sequence.json"
    path.write_bytes(b"")
    for read in (lambda: read_tvbench(path, tmp_path), lambda: read_tomato(path, tmp_path), lambda: load_examples(path)):
        with pytest.raises(DatasetError, match=r"(?s)action_sequence\.json.*the file is empty: it holds no records"):
            read()


def test_non_utf8_annotation_file_given_to_a_study_names_byte_and_line(tmp_path):
    path = tmp_path / "human.json"
    path.write_bytes(b'{"a": {"question": "caf\xe9?"}}')  # Latin-1
    with pytest.raises(DatasetError, match=r"(?s)human\.json.*not UTF-8 text: byte 0xe9 at line 1, column 24; re-save"):
        load_examples(path)


def test_a_json_object_with_a_key_twice_is_an_error_not_a_lost_record(tmp_path):
    record = {"key": "k", "demonstration_type": "human", "question": "Which way?", "options": ["up", "down"], "answer": 0}
    body = json.dumps(record)
    path = tmp_path / "human.json"
    path.write_text(f'{{"q1": {body}, "q1": {body}}}')  # TOMATO is keyed by record id; json keeps only the last
    with pytest.raises(DatasetError, match=r"the key 'q1' appears twice in one JSON object.*make the keys unique"):
        read_tomato(path, tmp_path, check_videos=False)


def test_duplicated_example_ids_in_a_jsonl_file_are_reported(tmp_path, study_examples):
    line = json.dumps(study_examples[0].to_json())
    path = tmp_path / "examples.jsonl"
    path.write_text(line + "\n" + line + "\n")
    with pytest.raises(DatasetError, match=r"record 1, field 'example_id': .* repeats the id of line 0"):
        read_jsonl(path)


def test_duplicated_example_ids_given_to_a_pipeline_or_study_are_an_error(tmp_path, toy_model, study_examples):
    twice = [study_examples[0], study_examples[1], study_examples[0]]
    with pytest.raises(ValueError, match=r"example_id '.*' (is used by examples 0 and 2|was already analysed in this run).*unique example_id"):
        run_flow(toy_model, twice, FlowOptions(presets=PRESETS), out_dir=tmp_path / "flow", progress=False)
    with pytest.raises(ValueError, match=r"example_id '.*' is used by examples 0 and 2.*unique example_id"):
        run_study(toy_model, twice, out_dir=tmp_path / "study", **FLOW_ONLY)


# ----------------------------------------------------------------------------- numbers the model cannot give


def test_fp16_overflow_is_recorded_as_a_skip_and_never_averaged(tmp_path, study_examples):
    torch.set_num_threads(1)
    model = HookedVideoTransformer.from_pretrained("tl-video/toy-temporal", dtype="float16")
    with torch.no_grad():
        model.blocks[0].mlp.W_out.mul_(1e4)  # the residual overflows fp16's 65504: inf, then NaN after the norm
    result = run_flow(model, study_examples[:2], FlowOptions(presets=PRESETS), out_dir=tmp_path, progress=False)
    skipped = skipped_examples(result.records)
    assert len(skipped) == 2 and all(r["error"] == "NonFiniteLogitsError" for r in skipped)
    assert "logits at the answer position are NaN or inf in float16" in skipped[0]["reason"]
    assert result.evaluated() == [] and result.baseline()["n_examples"] == 0
    assert FlowResult.read(tmp_path).records == result.records


def test_example_longer_than_the_context_is_skipped_and_the_run_goes_on(tmp_path, toy_model, study_examples):
    good = study_examples[0]
    long = dataclasses.replace(study_examples[1], question="Which one, " + "really " * (toy_model.cfg.n_ctx + 10) + "?")
    result = run_flow(toy_model, [long, good], FlowOptions(presets=PRESETS), out_dir=tmp_path, progress=False)
    (skipped,) = skipped_examples(result.records)
    assert skipped["example_id"] == long.example_id and skipped["error"] == "InputTooLongError"
    assert f"the model's context is {toy_model.cfg.n_ctx}; use fewer frames" in skipped["reason"]
    assert {r["example_id"] for r in result.evaluated()} == {good.example_id}


# ----------------------------------------------------------------------------- a disk that fills up


def test_disk_full_mid_run_stops_with_the_path_and_resumes_to_the_full_records(tmp_path, toy_model, study_examples, monkeypatch):
    """The disk cannot be made to fill up here, so the low-level write fails as a full disk does: the
    record batch of the second example is written in part, then ENOSPC."""
    examples = _three(study_examples)
    reference = {r["key"]: r for r in run_flow(toy_model, examples, FlowOptions(presets=PRESETS), progress=False).records}
    real_write, calls = os.write, []

    def filling_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 5:  # header, baseline 1, sweep 1, baseline 2, then the sweep of example 2 half written
            return real_write(fd, bytes(data[: len(data) // 2]))
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    out = tmp_path / "run"
    monkeypatch.setattr(os, "write", filling_disk)
    with pytest.raises(RecordWriteError, match=rf"cannot write records to {out / 'flow.jsonl'}: the disk is full; the records "
                                               r"written before are intact.*rerun with --resume"):
        run_study(toy_model, examples, out_dir=out, **FLOW_ONLY)
    monkeypatch.setattr(os, "write", real_write)

    assert read_run_info(out)["analyses"]["flow"]["status"] == "interrupted"
    with pytest.raises(ValueError, match="not a complete JSON record"):  # the torn batch is really on disk
        read_records(out / "flow.jsonl")
    kept = read_records(out / "flow.jsonl", drop_torn_tail=True)[1]
    assert len(kept) > 1 and all(_close(record, reference[record["key"]]) for record in kept)  # intact, as computed

    run_study(toy_model, examples, out_dir=out, resume=True, **FLOW_ONLY)
    records = read_records(out / "flow.jsonl")[1]
    assert len(records) == len({r["key"] for r in records}) == len(reference)
    assert all(_close(record, reference[record["key"]]) for record in records)


def _close(record: dict, expected: dict) -> bool:
    """Same fields and values (floats to 1e-6 relative, NaN equal to NaN)."""
    def same(a, b):
        if isinstance(b, float) and isinstance(a, (int, float)):
            return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        if isinstance(b, dict):
            return isinstance(a, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
        if isinstance(b, list):
            return isinstance(a, list) and len(a) == len(b) and all(map(same, a, b))
        return a == b
    return same(record, expected)


def test_a_knockout_whose_probabilities_are_not_finite_is_a_skipped_configuration(tmp_path, toy_model, study_examples):
    """A real forward hook makes every second forward after the baseline overflow (as an fp16 knockout can):
    those configurations are recorded as skipped with the reason; the finite ones keep their numbers."""
    calls = []

    def overflow_sometimes(resid, hook):
        calls.append(1)
        return resid if len(calls) % 2 else resid * float("inf")  # call 1 = the baseline: finite

    with toy_model.hooks(fwd_hooks=[("blocks.5.hook_resid_post", overflow_sometimes)]):
        result = run_flow(toy_model, study_examples[:1], FlowOptions(presets=PRESETS), out_dir=tmp_path, progress=False)
    flow = [r for r in result.records if r["kind"] == "flow"]
    bad = [r for r in flow if r["skipped"] and "not finite" in r["reason"]]
    assert bad and len(bad) < len(flow) and all("change_true" not in r for r in bad)
    assert all(math.isfinite(r["change_true"]) for r in result.evaluated())
    assert not toy_model.hook_dict["blocks.5.hook_resid_post"].fwd_hooks  # the hook is gone for the other tests
    assert result.tables() == {f"Not evaluated: numbers not finite ({len(bad)})": [
        {"record": r["key"], "reason": r["reason"]} for r in bad
    ]}  # and the report lists them


def test_a_relative_change_from_a_zero_baseline_is_undefined_not_nan():
    """A baseline probability that underflowed to 0 has no relative change: null in the record (valid JSON), and
    left out of the means and tests, whose n counts only defined values."""
    from tl_video.analyses.flow import relative_change

    assert relative_change(0.5, 0.0) is None and relative_change(0.0, 0.0) is None
    assert relative_change(0.25, 0.5) == -50.0


def test_a_batch_with_a_bad_key_writes_nothing(tmp_path):
    """An example's records go to disk together or not at all (a key already written, or repeated, refuses the batch)."""
    from tl_video.analyses.records import RecordSink, RunHeader

    header = RunHeader(analysis="flow", model_id="toy", model_config_hash="abc", dataset="d", options={}, seed=0)
    sink = RecordSink.open(tmp_path / "flow.jsonl", header)
    sink.append_many([{"key": "a/1", "v": 1.0}, {"key": "a/2", "v": 2.0}])
    for batch in ([{"key": "b/1"}, {"key": "a/1"}], [{"key": "b/1"}, {"key": "b/1"}], [{"key": "b/1"}, {"v": 3}]):
        with pytest.raises(ValueError, match="already written|needs a string 'key'"):
            sink.append_many(batch)
    assert [r["key"] for r in read_records(tmp_path / "flow.jsonl")[1]] == ["a/1", "a/2"] and not sink.has("b/1")


# ----------------------------------------------------------------------------- non-finite numbers past the baseline

OVERFLOW_POINT = "blocks.4.hook_resid_pre"  # inf here leaves L5-L6 (and the logits) NaN; L1-L4 stay finite


@contextmanager
def _overflowing(model, calls=frozenset()):
    """A real forward hook that counts forwards and multiplies the residual by inf on the ``calls``-th ones
    (1-based), as an fp16 overflow does; with no ``calls`` it only counts (and forces the plain forwards the
    overflowing run takes). Yields the list of forwards seen."""
    seen = []

    def hook(resid, hook):
        seen.append(1)
        return resid * float("inf") if len(seen) in calls else resid

    with model.hooks(fwd_hooks=[(OVERFLOW_POINT, hook)]):
        yield seen
    assert not model.hook_dict[OVERFLOW_POINT].fwd_hooks


def _forwards(model, run) -> int:
    """How many forwards ``run()`` makes (the overflowing runs below pick theirs by number)."""
    with _overflowing(model) as seen:
        run()
    return len(seen)


def _no_nan_anywhere(records) -> bool:
    """No NaN or inf in any number of any record (what a written record must never hold)."""
    def finite(value):
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, dict):
            return all(map(finite, value.values()))
        if isinstance(value, list):
            return all(map(finite, value))
        return True
    return all(finite(record) for record in records)


def _not_finite_skips(records, kind):
    return [r for r in records if r.get("kind") == kind and r.get("skipped")
            and "not finite (NaN or inf: an overflow?); run in float32 or bfloat16" in r["reason"]]


def test_pathways_condition_that_is_not_finite_is_a_skip_not_a_wrong_answer(tmp_path, toy_model, study_examples):
    from tl_video.analyses.pathways import PathwayOptions, PathwayResult, run_pathways

    options = PathwayOptions(cross_frame="L1-L3", video_to_question="L2-4", question_to_last="L3-L6")
    one = _forwards(toy_model, lambda: run_pathways(toy_model, study_examples[:1], options, progress=False))
    assert one == 3  # the baseline, then the pathways and the random condition
    with _overflowing(toy_model, {2}):  # the first example's pathways condition overflows
        result = run_pathways(toy_model, study_examples[:2], options, out_dir=tmp_path, progress=False)
    (bad,) = _not_finite_skips(result.records, "pathways")
    assert bad["condition"] == "pathways" and bad["example_id"] == study_examples[0].example_id and "p_true" not in bad
    assert _no_nan_anywhere(result.records)
    assert result.accuracy("pathways").n == 1 and result.accuracy("random").n == result.accuracy("full_attention").n == 2
    assert len(result.skipped()) == 1 and result.findings()  # the summaries use what was evaluated
    assert PathwayResult.read(tmp_path).records == result.records


def test_patching_run_that_is_not_finite_is_a_skip(tmp_path, toy_model, study_examples):
    from tl_video.analyses.patching import PatchingOptions, PatchingResult, run_patching

    direction = [e for e in study_examples if e.task == "moving_direction"]  # reversing changes their answer
    options = PatchingOptions(corruptions=({"name": "reverse"},), layers=(0, 1))
    one = _forwards(toy_model, lambda: run_patching(toy_model, direction[:1], options, progress=False))
    # example 1: its last patched pass overflows; example 2: its corrupted run does
    with _overflowing(toy_model, {one, one + 2}):
        result = run_patching(toy_model, direction, options, out_dir=tmp_path, progress=False)
    bad = {r["example_id"]: r for r in _not_finite_skips(result.records, "patching")}
    assert set(bad) == {e.example_id for e in direction}
    assert "the patched runs' metric" in bad[direction[0].example_id]["reason"]
    assert "the corrupted run's logits" in bad[direction[1].example_id]["reason"]
    assert all("recovery" not in r for r in bad.values()) and _no_nan_anywhere(result.records)
    assert result.patching_records("reverse") == [] and len(result.skipped("reverse")) == 2
    assert "2 skipped" in result.findings()[0].sentence
    assert PatchingResult.read(tmp_path).records == result.records


def test_lens_layers_that_are_not_finite_are_a_skip(tmp_path, toy_model, study_examples):
    from tl_video.analyses.lens import LensOptions, LensResult, run_lens

    with _overflowing(toy_model, {2, 3}):  # the first example's lens and letter readouts overflow from L5 on
        result = run_lens(toy_model, study_examples[:2], LensOptions(), out_dir=tmp_path, progress=False)
    (bad,) = _not_finite_skips(result.records, "lens")
    assert bad["example_id"] == study_examples[0].example_id and "top1_counts" not in bad
    assert "output of L5, output of L6" in bad["reason"] and "output of L4" not in bad["reason"]
    assert _no_nan_anywhere(result.records)
    assert [r["example_id"] for r in result.lens_records()] == [study_examples[1].example_id]
    assert all(math.isfinite(c.mean) for c in result.answer_probability())
    assert result.grid()["example_id"] == study_examples[1].example_id  # the grid goes to the next example
    result.findings()
    with _overflowing(toy_model, {2, 3}):  # the grid example named by the user: no grid, and why
        named = run_lens(toy_model, study_examples[:2], LensOptions(grid_example=study_examples[0].example_id), progress=False)
    with pytest.raises(ValueError, match=r"no per-frame grid recorded for .*readouts were skipped: .*not finite"):
        named.grid()
    assert LensResult.read(tmp_path).records == result.records


def test_attention_map_that_is_not_finite_is_a_skip(tmp_path, toy_model, study_examples):
    from tl_video.analyses.attention import AttentionOptions, AttentionResult, run_attention

    options = AttentionOptions(layers=(1, 5))
    one = _forwards(toy_model, lambda: run_attention(toy_model, study_examples[:1], options, progress=False))
    assert one == 3  # the baseline, then the maps at baseline and under the knockout
    with _overflowing(toy_model, {3}):  # the first example's knockout maps: L6 is NaN
        result = run_attention(toy_model, study_examples[:2], options, out_dir=tmp_path, progress=False)
    (bad,) = _not_finite_skips(result.records, "attention")
    assert bad["condition"] == "knockout" and bad["example_id"] == study_examples[0].example_id and "group_map" not in bad
    assert _no_nan_anywhere(result.records)
    (change, _), _ = result.video_mass_change()  # paired by example: only the second has both conditions
    assert change.n == 1 and len(result.findings()) == 2
    tokens = result.token_records()  # per-token maps go to the first example with both conditions finite
    assert {r["example_id"] for r in tokens.values()} == {study_examples[1].example_id}
    from tl_video.plots.attention import figures

    assert set(figures(result)) == {"attention_maps", "attention_video_mass", "attention_token_maps"}
    assert AttentionResult.read(tmp_path).records == result.records


def test_generation_probability_that_is_not_finite_is_a_skip(tmp_path, toy_model, study_examples):
    from tl_video.analyses.generation_probability import GenerationProbabilityResult, run_generation_probability

    with _overflowing(toy_model, {3}):  # the first example's paper-compatible readout overflows
        result = run_generation_probability(toy_model, study_examples[:2], out_dir=tmp_path, progress=False)
    (bad,) = _not_finite_skips(result.records, "generation_probability")
    assert bad["readout"] == "paper_compat" and bad["example_id"] == study_examples[0].example_id
    assert "output of L5, output of L6" in bad["reason"] and "probabilities" not in bad
    assert _no_nan_anywhere(result.records)
    assert result.per_example("paper_compat")["true option"].shape[0] == 1
    assert result.per_example("final_norm")["true option"].shape[0] == 2
    assert GenerationProbabilityResult.read(tmp_path).records == result.records


OPEN = dict(presets=PRESETS, layers=(1, 3), max_new_tokens=2, generate_under_knockout=False)


def test_open_ended_knockout_that_is_not_finite_is_a_skipped_configuration(tmp_path, toy_model, study_examples):
    from tl_video.analyses.open_ended import OpenEndedOptions, OpenEndedResult, run_open_ended

    options = OpenEndedOptions(**OPEN)
    one = _forwards(toy_model, lambda: run_open_ended(toy_model, study_examples[:1], options, progress=False))
    with _overflowing(toy_model, {one}):  # the last forward: the last configuration's probe
        result = run_open_ended(toy_model, study_examples[:1], options, out_dir=tmp_path, progress=False)
    (bad,) = _not_finite_skips(result.records, "open_ended")
    configurations = [r for r in result.records if r["kind"] == "open_ended"]
    assert "change_anchor" not in bad and len(result.evaluated()) == len(configurations) - 1
    assert _no_nan_anywhere(result.records)
    assert OpenEndedResult.read(tmp_path).records == result.records


def test_open_ended_answer_that_is_not_finite_skips_the_example(tmp_path, toy_model, study_examples):
    """Every forward after the first answer step overflows: the answer was read from NaN logits, so the
    example is skipped with the reason (not analysed with a made-up answer)."""
    from tl_video.analyses.open_ended import OpenEndedOptions, run_open_ended

    with _overflowing(toy_model, set(range(2, 100))):
        result = run_open_ended(toy_model, study_examples[:1], OpenEndedOptions(anchor_words=("left",), **OPEN),
                                out_dir=tmp_path, progress=False)
    (skipped,) = skipped_examples(result.records)
    assert skipped["error"] == "NonFiniteLogitsError" and "the answer's logits" in skipped["reason"]
    assert result.baseline()["n_examples"] == 0 and result.evaluated() == []


def test_open_ended_skips_undecodable_videos_with_their_reason_and_counts_them(tmp_path, toy_model, study_examples):
    good, bad = study_examples[0], study_examples[2]
    raw = open(bad.video, "rb").read()
    (tmp_path / "truncated.mp4").write_bytes(raw[: len(raw) * 2 // 5])
    examples = [dataclasses.replace(bad, video=str(tmp_path / "truncated.mp4")), good]
    only = {"analyses": ("open-ended",), "pipeline_options": {"open-ended": OPEN}, "formats": ("html",), "progress": False}

    study = run_study(toy_model, examples, out_dir=tmp_path / "run", **only)

    result = study.results["open-ended"]
    (skipped,) = skipped_examples(result.records)
    assert skipped["example_id"] == bad.example_id and skipped["error"] == "UnreadableVideoError"
    assert "cannot be read as a video" in skipped["reason"]
    assert {r["example_id"] for r in result.evaluated()} == {good.example_id}  # the run went on
    assert read_run_info(tmp_path / "run")["analyses"]["open-ended"]["n_skipped"] == 1
    again = run_study(toy_model, examples, out_dir=tmp_path / "run", resume=True, **only)  # resume: the skip stays
    assert again.results["open-ended"].records == result.records


def test_open_ended_generation_under_knockout_that_is_not_finite_keeps_no_answer(toy_model, study_examples):
    from tl_video.analyses.open_ended import OpenEndedOptions, run_open_ended

    options = OpenEndedOptions(**(OPEN | {"generate_under_knockout": True, "layers": (3,)}))
    one = _forwards(toy_model, lambda: run_open_ended(toy_model, study_examples[:1], options, progress=False))
    with _overflowing(toy_model, {one}):  # the last forward: the check of the last answer generated under knockout
        result = run_open_ended(toy_model, study_examples[:1], options, progress=False)
    *fine, last = result.evaluated()
    assert "not finite" in last["generation_skipped"] and "same_answer" not in last and math.isfinite(last["change_anchor"])
    assert fine and all("same_answer" in r for r in fine) and _no_nan_anywhere(result.records)
    assert result.answers_changed(last["label"])[3] == (0, 0)  # its answer is counted nowhere


def test_patching_with_no_gap_threshold_excludes_a_zero_gap_instead_of_dividing_by_it(toy_model, study_examples):
    """min_gap=0 is allowed; a corruption that leaves the answer (reversing an object count: gap exactly 0) has no
    recovery to normalise, so it is excluded, not recorded as 0/0."""
    from tl_video.analyses.patching import PatchingOptions, run_patching

    count = next(e for e in study_examples if e.task == "object_count")
    options = PatchingOptions(corruptions=({"name": "reverse"},), layers=(0,), min_gap=0)
    result = run_patching(toy_model, [count], options, progress=False)
    (record,) = [r for r in result.records if r["kind"] == "patching"]
    assert record["gap"] == 0.0 and record["excluded"] and record["recovery"] is None
    assert _no_nan_anywhere(result.records)


def test_summaries_and_figures_still_draw_when_every_run_of_a_condition_is_skipped(toy_model, study_examples):
    """A condition, readout or knockout skipped on every example leaves "n/a" and empty curves, not a crash that
    would take the analysis's other tables and figures out of the report."""
    from tl_video.analyses.attention import AttentionOptions, run_attention
    from tl_video.analyses.generation_probability import run_generation_probability
    from tl_video.analyses.pathways import PathwayOptions, run_pathways
    from tl_video.plots import attention as attention_plots, generation_probability as probability_plots

    options = PathwayOptions(cross_frame="L1-L3", video_to_question="L2-4", question_to_last="L3-L6")
    with _overflowing(toy_model, {2}):  # the pathways condition of the only example
        pathways = run_pathways(toy_model, study_examples[:1], options, progress=False)
    row = pathways.tables()["Effective pathways vs full attention and random blocking"][1]
    assert row["accuracy"] == "n/a (0/0)" and row["edges kept per example"] == "n/a"

    two_tasks = [study_examples[0], study_examples[2]]
    with _overflowing(toy_model, {2}):  # the final-norm readout of the first task's only example
        probability = run_generation_probability(toy_model, two_tasks, progress=False)
    assert "generation_probability_by_task" in probability_plots.figures(probability)

    with _overflowing(toy_model, {3}):  # the knockout maps of the only example
        attention = run_attention(toy_model, study_examples[:1], AttentionOptions(layers=(1, 5)), progress=False)
    assert {"attention_maps", "attention_video_mass"} <= set(attention_plots.figures(attention))


def test_runs_skipped_as_not_finite_are_listed_in_the_report_with_their_reason(tmp_path, toy_model, study_examples):
    only = {"analyses": ("gen-prob",), "formats": ("html",), "progress": False}
    with _overflowing(toy_model, {3}):  # the paper-compatible readout of the only example
        run_study(toy_model, study_examples[:1], out_dir=tmp_path, **only)
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Not evaluated: numbers not finite (1)" in report
    assert f"paper_compat/{study_examples[0].example_id}" in report and "at output of L5, output of L6 are not finite" in report
    analysis = json.loads((tmp_path / "run.json").read_text())["analyses"]["gen-prob"]
    assert analysis["n_not_finite"] == 1 and analysis["n_skipped"] == 0  # counted in run.json too
