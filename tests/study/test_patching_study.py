"""The activation-patching pipeline on the built-in model: records against hand-written patches, exclusion, read-back, resume."""

from __future__ import annotations

import math

import pytest
import torch

from tl_video.analyses.patching import PatchingOptions, PatchingResult, run_patching
from tl_video.analyses.scoring import StudyOptions, score_example
from tl_video.prompts.prepare import prepare_example
from tl_video.video.corruptions import reverse

OPTIONS = PatchingOptions(corruptions=({"name": "reverse"},), layers=(0, 3))


@pytest.fixture(scope="module")
def examples(study_examples):
    by_task = {e.task: e for e in reversed(study_examples)}
    return (by_task["moving_direction"], by_task["object_count"])  # object count: reversing keeps the answer


@pytest.fixture(scope="module")
def patch_run(toy_model, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("patching")
    return out, run_patching(toy_model, examples, OPTIONS, out_dir=out, progress=False)


def _hand_metric(model, tokens, clean_token, corrupted_token, hooks=()):
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=list(hooks))[0, -1]
    return float(logits[clean_token] - logits[corrupted_token])


def test_record_equals_hand_written_patches(toy_model, examples, patch_run):
    _, result = patch_run
    example = examples[0]
    record = next(r for r in result.patching_records("reverse") if r["example_id"] == example.example_id)
    scored = score_example(toy_model, example, StudyOptions())
    corrupted = prepare_example(toy_model, example, video=reverse(scored.prepared.frames))
    letters = scored.letters
    corrupted_letter = example.option_letters[example.metadata["reversed_answer_index"]]
    assert (record["clean_letter"], record["corrupted_letter"]) == (example.answer_letter, corrupted_letter)
    clean_token, corrupted_token = letters[example.answer_letter], letters[corrupted_letter]
    clean_value = _hand_metric(toy_model, scored.prepared.tokens, clean_token, corrupted_token)
    corrupted_value = _hand_metric(toy_model, corrupted.tokens, clean_token, corrupted_token)
    assert math.isclose(record["clean_metric"], clean_value, abs_tol=1e-4)
    assert math.isclose(record["corrupted_metric"], corrupted_value, abs_tol=1e-4)
    with torch.no_grad():
        _, cache = toy_model.run_with_cache(scored.prepared.tokens)
    layout = scored.prepared.layout
    for row, layer in enumerate(record["layers"]):
        name = f"blocks.{layer}.hook_resid_pre"
        for frame in (0, 3, layout.n_frames - 1):
            positions = layout.positions(f"frame[{frame}]")

            def patch(resid, hook, positions=positions, name=name):
                resid = resid.clone()
                resid[:, positions] = cache[name][:, positions]
                return resid

            patched = _hand_metric(toy_model, corrupted.tokens, clean_token, corrupted_token, [(name, patch)])
            assert math.isclose(record["patched"][row][frame], patched, abs_tol=1e-4), (layer, frame)
            expected = (patched - corrupted_value) / (clean_value - corrupted_value)
            assert math.isclose(record["recovery"][row][frame], expected, abs_tol=1e-4), (layer, frame)


def test_an_unchanged_answer_is_excluded_and_counted(patch_run):
    _, result = patch_run
    excluded = result.patching_records("reverse", excluded=True)
    assert [r["task"] for r in excluded] == ["object_count"]
    assert excluded[0]["gap"] == 0.0 and excluded[0]["recovery"] is None
    assert result.counts("reverse") == {"n": 1, "excluded": 1, "min_gap": 1.0}
    assert "1 excluded for a clean–corrupted gap below 1" in result.findings()[0].sentence
    assert len(result.recovery("reverse")) == 2 and result.recovery("reverse")[0][0].n == 1


def test_result_reads_back_from_disk(patch_run):
    out, result = patch_run
    again = PatchingResult.read(out)
    assert again.records == result.records and again.header == result.header
    assert again.options == OPTIONS


def test_resume_after_a_partial_run_writes_the_same_records(toy_model, examples, patch_run, tmp_path):
    _, full = patch_run
    run_patching(toy_model, examples[:1], OPTIONS, out_dir=tmp_path, progress=False)
    resumed = run_patching(toy_model, examples, OPTIONS, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.records == full.records


def test_progress_false_silences_transformer_lens_bars(toy_model, examples, capfd):
    options = PatchingOptions(corruptions=({"name": "freeze", "index": 0},), layers=(5,))
    run_patching(toy_model, examples[:1], options, progress=False)
    assert capfd.readouterr().err == ""


def test_bad_options_fail_in_one_line():
    with pytest.raises(ValueError, match="unknown corruption 'revers'"):
        PatchingOptions(corruptions=({"name": "revers"},))
    with pytest.raises(ValueError, match="min_gap must be a number >= 0"):
        PatchingOptions(min_gap=-1)


def test_heatmap_shows_the_mean_recovery_centred_at_zero_with_counts():
    from tl_video.analyses.records import RunHeader
    from tl_video.plots.patching import figures, recovery_heatmap

    options = PatchingOptions(corruptions=({"name": "reverse"},), layers=(0, 1))
    header = RunHeader(analysis="patching", model_id="fixed", model_config_hash="0", dataset="fixed", options=options.to_json(), seed=0)

    def record(example_id, recovery, excluded=False):
        return {"key": f"patching/reverse/{example_id}", "kind": "patching", "example_id": example_id, "task": "t",
                "corruption": {"name": "reverse"}, "corruption_label": "reverse", "activation": "resid_pre",
                "clean_letter": "A", "corrupted_letter": "B", "corrupted_letter_source": "dataset",
                "clean_metric": 4.0, "corrupted_metric": 0.0 if not excluded else 3.5, "gap": 4.0 if not excluded else 0.5,
                "excluded": excluded, "layers": None if excluded else [0, 1], "patched": None, "recovery": recovery}

    result = PatchingResult(header=header, records=[
        record("a", [[1.0, 0.0], [0.5, -0.25]]), record("b", [[0.0, 0.0], [0.5, -0.75]]), record("c", None, excluded=True),
    ])
    fig = recovery_heatmap(result, "reverse")
    (heatmap,) = fig.data
    assert heatmap.z.tolist() == [[0.5, 0.0], [0.5, -0.5]] and list(heatmap.y) == ["L1", "L2"] and list(heatmap.x) == ["1", "2"]
    assert (heatmap.zmid, heatmap.zmin, heatmap.zmax) == (0, -1.0, 1.0)
    note = fig.layout.annotations[0].text
    assert "n = 2 examples, 1 excluded" in note and "clean +4.00, corrupted +0.00" in note
    assert list(figures(result)) == ["patching_reverse"]


def test_batched_frame_patching_equals_one_pass_per_frame(toy_model, examples):
    from tl_video.interventions.patching import patch_frames

    scored = score_example(toy_model, examples[0], StudyOptions())
    corrupted = prepare_example(toy_model, examples[0], video=reverse(scored.prepared.frames))
    with torch.no_grad():
        _, cache = toy_model.run_with_cache(scored.prepared.tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))

    def metric(logits):
        return logits[:, -1, scored.true_token] - logits[:, -1].mean(-1)

    one_by_one = patch_frames(toy_model, scored.prepared, corrupted, cache, lambda logits: metric(logits).mean(), layers=[0, 2], progress=False)
    batched = patch_frames(toy_model, scored.prepared, corrupted, cache, metric, layers=[0, 2], progress=False, batched=True)
    assert batched.shape == one_by_one.shape == (2, 8)
    assert torch.allclose(batched, one_by_one, atol=1e-5)
