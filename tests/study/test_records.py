"""Record files, statistics and baseline scoring: the base every study pipeline writes and reads through."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_video.analyses.records import RecordSink, RunHeader, read_records, read_run
from tl_video.analyses.scoring import StudyOptions, baseline_summary, scored_examples
from tl_video.analyses.statistics import Finding, mean_ci, paired_permutation_p


def header(**changes) -> RunHeader:
    fields = dict(analysis="flow", model_id="toy", model_config_hash="abc", dataset="synthetic", options={"k": 3}, seed=0)
    return RunHeader(**(fields | changes))


def write_three(path) -> RecordSink:
    sink = RecordSink.open(path, header())
    for index in range(3):
        sink.append({"key": f"example/{index}", "value": float(index)})
    return sink


# ----------------------------------------------------------------------------- records


def test_records_round_trip_with_header(tmp_path):
    write_three(tmp_path / "flow.jsonl")
    on_disk, records = read_records(tmp_path / "flow.jsonl")
    assert on_disk.mismatch(header()) is None and on_disk.tl_video_version
    assert [r["key"] for r in records] == ["example/0", "example/1", "example/2"]
    assert all(r["type"] == "record" for r in records)


def test_the_model_hash_ignores_the_device_but_not_the_dtype():
    """A run resumed on another GPU (a requeued job, another torchrun rank, a split model) is the same run;
    one in another dtype computes other numbers and is refused, saying why."""
    import dataclasses

    import torch

    from tl_video.analyses.records import config_hash
    from tl_video.model.config import VideoTransformerConfig

    config = VideoTransformerConfig(d_model=8, d_head=4, n_layers=1, n_ctx=16, n_heads=2, d_vocab=10, device="cpu")
    assert config_hash(dataclasses.replace(config, device="cuda:3")) == config_hash(config)
    half = config_hash(dataclasses.replace(config, dtype=torch.bfloat16))
    assert half != config_hash(config)
    assert "another checkpoint, --dtype" in header(model_config_hash=half).mismatch(header())


def test_existing_file_without_resume_is_a_clear_error(tmp_path):
    write_three(tmp_path / "flow.jsonl")
    with pytest.raises(FileExistsError, match=r"flow\.jsonl already holds results; pass resume=True \(--resume\)"):
        RecordSink.open(tmp_path / "flow.jsonl", header())


@pytest.mark.parametrize(
    ("change", "field"),
    [({"options": {"k": 5}}, "options"), ({"model_id": "other"}, "model_id"), ({"seed": 1}, "seed"), ({"dataset": "tvbench"}, "dataset")],
)
def test_header_mismatch_on_resume_names_the_field(tmp_path, change, field):
    write_three(tmp_path / "flow.jsonl")
    with pytest.raises(ValueError, match=rf"cannot resume .*flow\.jsonl: it was written by a different run \({field}: on disk"):
        RecordSink.open(tmp_path / "flow.jsonl", header(**change), resume=True)


def test_resume_keeps_records_and_skips_their_keys(tmp_path):
    write_three(tmp_path / "flow.jsonl")
    sink = RecordSink.open(tmp_path / "flow.jsonl", header(extra={"command": "differs: informative only"}), resume=True)
    assert sink.n_resumed == 3 and sink.has("example/2") and not sink.has("example/3")
    sink.append({"key": "example/3", "value": 3.0})
    assert [r["key"] for r in read_records(tmp_path / "flow.jsonl")[1]] == [f"example/{i}" for i in range(4)]
    with pytest.raises(ValueError, match="already written"):
        sink.append({"key": "example/0"})


def test_torn_last_line_is_an_error_when_read_and_repaired_on_resume(tmp_path):
    path = tmp_path / "flow.jsonl"
    write_three(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"type": "record", "key": "example/3", "val')  # a crash mid-write
    with pytest.raises(ValueError, match=r"flow\.jsonl:5: not a complete JSON record .*resume to repair it"):
        read_records(path)
    sink = RecordSink.open(path, header(), resume=True)
    assert sink.n_resumed == 3 and not sink.has("example/3")
    assert read_records(path)[1] == sink.records  # the file is whole again
    sink.append({"key": "example/3", "value": 3.0})
    assert [r["key"] for r in read_records(path)[1]][-1] == "example/3"


def test_complete_last_record_without_newline_is_kept_and_the_file_repaired(tmp_path):
    path = tmp_path / "flow.jsonl"
    write_three(path)
    path.write_text(path.read_text().rstrip("\n"))
    sink = RecordSink.open(path, header(), resume=True)
    sink.append({"key": "example/3", "value": 3.0})
    assert [r["key"] for r in read_records(path)[1]] == [f"example/{i}" for i in range(4)]


def test_torn_header_is_started_again_on_resume(tmp_path):
    path = tmp_path / "flow.jsonl"
    path.write_text('{"type": "header", "analysis": "fl')  # the crash came before the first record
    sink = RecordSink.open(path, header(), resume=True)
    assert sink.n_resumed == 0
    sink.append({"key": "example/0"})
    assert read_records(path)[0].mismatch(header()) is None
    with pytest.raises(FileExistsError):
        RecordSink.open(path, header())


def test_torn_line_in_the_middle_is_never_dropped(tmp_path):
    path = tmp_path / "flow.jsonl"
    write_three(path)
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:10]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"flow\.jsonl:3: not a complete JSON record"):
        RecordSink.open(path, header(), resume=True)


def test_not_a_record_file_is_a_clear_error(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text(json.dumps({"example_id": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"examples\.jsonl:1: the first line is not a tl_video record header"):
        read_records(path)


def test_records_need_a_string_key_and_nan_survives(tmp_path):
    sink = RecordSink.open(tmp_path / "flow.jsonl", header())
    with pytest.raises(ValueError, match="a record needs a string 'key'"):
        sink.append({"value": 1.0})
    sink.append({"key": "a", "value": float("nan"), "array": np.arange(3)})
    record = read_records(tmp_path / "flow.jsonl")[1][0]
    assert np.isnan(record["value"]) and record["array"] == [0, 1, 2]


def test_in_memory_sink_writes_nothing(tmp_path):
    sink = RecordSink.open(None, header())
    sink.append({"key": "a"})
    assert sink.records[0]["key"] == "a" and not list(tmp_path.iterdir())


def test_read_run_returns_every_analysis(tmp_path):
    write_three(tmp_path / "flow.jsonl")
    RecordSink.open(tmp_path / "lens.jsonl", header(analysis="lens")).append({"key": "x"})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "examples.jsonl").write_text("{}\n")  # a data folder inside the run is not a record file
    run = read_run(tmp_path)
    assert sorted(run) == ["flow", "lens"] and len(run["flow"][1]) == 3
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        read_run(tmp_path / "missing")


# ----------------------------------------------------------------------------- statistics


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e4, max_value=1e4, allow_nan=False), min_size=1, max_size=30),
    st.integers(min_value=0, max_value=2**31),
)
def test_bootstrap_interval_is_seeded_and_contains_the_mean(values, seed):
    first, second = mean_ci(values, seed=seed), mean_ci(values, seed=seed)
    assert first == second
    assert first.n == len(values)
    assert first.mean == pytest.approx(np.mean(values))
    assert first.low <= first.mean <= first.high


def test_bootstrap_interval_is_a_real_interval_and_ignores_non_finite_values():
    values = np.random.default_rng(0).normal(5.0, 1.0, 40)
    interval = mean_ci(np.append(values, [np.nan, np.inf]), seed=0)
    assert interval.n == 40 and interval.low < interval.mean < interval.high
    assert 4.0 < interval.low and interval.high < 6.0 and interval.high - interval.low < 1.5
    assert mean_ci(values, seed=0) != mean_ci(values, seed=1)  # the seed is what makes it reproducible
    assert mean_ci([3.0]) .low == 3.0 and mean_ci([2.0, 2.0]).high == 2.0
    assert mean_ci([]).n == 0 and np.isnan(mean_ci([]).mean)


def test_paired_permutation_test_is_seeded_and_detects_a_clear_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 30)
    assert paired_permutation_p(a - 3.0, a, seed=0) < 1e-3
    assert paired_permutation_p(a, seed=4) == paired_permutation_p(a, seed=4)
    assert paired_permutation_p([1.0, -1.0, 2.0, -2.0]) == pytest.approx(1.0)
    assert paired_permutation_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32)  # exact: 2 of 32 sign flips
    assert np.isnan(paired_permutation_p([1.0])) and paired_permutation_p([0.0, 0.0]) == 1.0


def test_finding_reads_as_a_sentence_with_its_test():
    finding = Finding("Blocking Video↛Question in L2–L4 lowers p(answer) by 40%.", "paired sign-flip permutation test", 0.0123, 12)
    assert str(finding) == "Blocking Video↛Question in L2–L4 lowers p(answer) by 40%. (paired sign-flip permutation test, p = 0.0123, n = 12)"
    assert Finding("x", "descriptive", None, 3).to_json()["p_value"] is None
    assert str(Finding("x", "paired test", float("nan"), 1)) == "x (paired test, p not defined, n = 1)"


# ----------------------------------------------------------------------------- scoring


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"samples": "right"}, "samples='right'; valid: correct, all, wrong"),
        ({"prompt_style": "llava"}, "prompt_style='llava'; valid: chat, paper"),
        ({"num_frames": 0}, "num_frames must be a positive integer"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_study_options_are_validated(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StudyOptions(**options)


def test_baseline_records_count_every_example_and_resume_keeps_the_selection(toy_model, study_examples, tmp_path):
    examples = study_examples[:3]
    options = StudyOptions(num_frames=8, samples="correct")
    make_header = lambda: RunHeader.for_model(toy_model, analysis="flow", dataset="synthetic", options=options.to_json(), seed=0)  # noqa: E731
    sink = RecordSink.open(tmp_path / "flow.jsonl", make_header())
    selected = [s.example.example_id for s in scored_examples(toy_model, examples, options, sink=sink, progress=False)]
    summary = baseline_summary(sink.records)
    assert summary["n_examples"] == 3 and summary["n_selected"] == len(selected) == summary["n_correct"]
    for scored_record in sink.records:
        letters = scored_record["letter_probabilities"]
        assert set(letters) == {"A", "B", "C", "D"} and scored_record["correct"] == scored_record["selected"]
    resumed = RecordSink.open(tmp_path / "flow.jsonl", make_header(), resume=True)
    again = [s.example.example_id for s in scored_examples(toy_model, examples, options, sink=resumed, progress=False)]
    assert again == selected and len(resumed.records) == 3
    with pytest.raises(ValueError, match="no examples to analyse"):
        list(scored_examples(toy_model, [], options))


def test_accuracy_ignores_the_case_of_the_answer_letter(toy_model, study_examples):
    """A model answering "(c" to option C is right (the reference counted it wrong); another letter is not."""
    from dataclasses import replace

    import torch

    from tl_video.analyses.flow import knockout_record
    from tl_video.analyses.scoring import score_example

    scored = score_example(toy_model, study_examples[0], StudyOptions())
    (lower,) = scored.true_variants
    assert toy_model.to_string([lower]) == scored.true_letter.lower()
    assert replace(scored, answer_token=lower).correct and scored.is_true(scored.true_token)
    other = next(token for letter, token in scored.letters.items() if letter != scored.true_letter)
    assert not replace(scored, answer_token=other).correct
    probabilities = torch.zeros(toy_model.cfg.d_vocab)
    probabilities[lower] = 1.0
    assert knockout_record(scored, probabilities)["new_correct"] is True
