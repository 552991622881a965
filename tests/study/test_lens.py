"""The logit-lens pipeline on the built-in model: records against hand computations, read-back, resume."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from tl_video.analyses.lens import (
    LensOptions,
    LensResult,
    bin_label,
    default_bin_size,
    layer_bins,
    run_lens,
)
from tl_video.analyses.scoring import StudyOptions, score_example
from tl_video.interventions.logit_lens import video_token_top_k


def _text(tokenizer, token: int) -> str:
    """Decoded text; a token holding part of a multi-byte character keeps its vocabulary name."""
    text = tokenizer.decode([token])
    return tokenizer.convert_ids_to_tokens(token) if "\ufffd" in text else text


@pytest.fixture(scope="module")
def examples(study_examples):
    return study_examples[:3]


@pytest.fixture(scope="module")
def lens_run(toy_model, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("lens")
    return out, run_lens(toy_model, examples, LensOptions(), out_dir=out, progress=False)


def test_bins_are_non_overlapping_and_scale_with_depth():
    assert default_bin_size(32) == 5 and default_bin_size(6) == 1 and default_bin_size(12) == 2
    assert layer_bins(32, 5) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30), (30, 32)]
    assert bin_label(0, 5) == "L1–L5" and bin_label(2, 3) == "L3"


def test_lens_record_equals_the_hand_computation(toy_model, examples, lens_run):
    _, result = lens_run
    example = examples[0]
    record = next(r for r in result.lens_records() if r["example_id"] == example.example_id)
    scored = score_example(toy_model, example, StudyOptions())
    layout = scored.prepared.layout
    with torch.no_grad():
        _, cache = toy_model.run_with_cache(scored.prepared.tokens)
    for layer in range(toy_model.cfg.n_layers):
        resid = cache[f"blocks.{layer}.hook_resid_post"][0]
        with torch.no_grad():
            logits = toy_model.ln_final(resid) @ toy_model.W_U + toy_model.b_U
        top1 = logits[layout.positions("video")].argmax(-1)
        expected = Counter(_text(toy_model.tokenizer, int(i)) for i in top1)
        assert record["top1_counts"][layer] == dict(expected), f"layer {layer}"
        last = logits[layout.positions("last")[0]].softmax(-1)
        assert math.isclose(record["answer_probability"][layer], float(last[scored.true_token]), abs_tol=1e-5)
    assert result.options.bin_size == 1 and result.options.keyword_set == "synthetic"


def test_paper_compat_reads_layer_inputs_then_the_final_normed_output_through_w_e(toy_model, examples):
    scored = score_example(toy_model, examples[0], StudyOptions())
    lens = video_token_top_k(toy_model, scored.prepared, k=10, paper_compat=True)
    n = toy_model.cfg.n_layers
    video = scored.prepared.layout.positions("video")
    with torch.no_grad():
        _, cache = toy_model.run_with_cache(scored.prepared.tokens)
    rows = [cache[f"blocks.{layer}.hook_resid_pre"][0, video] for layer in range(n - 1)]
    with torch.no_grad():
        rows.append(toy_model.ln_final(cache[f"blocks.{n - 1}.hook_resid_post"][0, video]))
    assert lens.top_ids.shape == (n, video.numel(), 10)
    for layer, residual in enumerate(rows):
        top = (residual @ toy_model.W_E.T).softmax(-1).topk(10)
        assert torch.allclose(lens.top_probabilities[layer], top.values, atol=1e-6), f"row {layer}"
        assert torch.equal(lens.top_ids[layer], top.indices), f"row {layer}"
    assert lens.points[0] == "input of L1" and lens.points[-1] == f"output of L{n} (final norm)"


def test_vocabulary_rows_sum_to_one_and_the_grid_has_every_frame(lens_run):
    _, result = lens_run
    table = result.vocabulary("spatial")
    assert table.bins == [f"L{i}" for i in range(1, 7)]
    assert all(n == 8 * len(result.lens_records()) for n in table.n_readouts)  # 8 video tokens per example
    for row in table.shares:
        assert all(math.isnan(x) for x in row) or math.isclose(sum(row), 1.0)
    grid = result.grid()
    assert len(grid["frames_png"]) == 8 and len(grid["top_tokens"]) == 6 and len(grid["top_tokens"][0][0]) == 5
    assert [f.n for f in result.answer_probability()] == [len(result.lens_records())] * 6


def test_result_reads_back_from_disk(lens_run):
    out, result = lens_run
    again = LensResult.read(out)
    assert again.records == result.records and again.header == result.header
    assert [str(f) for f in again.findings()] == [str(f) for f in result.findings()]


def test_resume_after_a_partial_run_writes_the_same_records(toy_model, examples, lens_run, tmp_path):
    _, full = lens_run
    run_lens(toy_model, examples[:1], LensOptions(), out_dir=tmp_path, progress=False)
    resumed = run_lens(toy_model, examples, LensOptions(), out_dir=tmp_path, resume=True, progress=False)
    assert resumed.records == full.records


def test_bad_options_fail_in_one_line():
    with pytest.raises(ValueError, match="bin_size must be a positive integer"):
        LensOptions(bin_size=0)
    with pytest.raises(ValueError, match="keyword_set='words'; valid: auto, paper, synthetic"):
        LensOptions(keyword_set="words")


def _fixed_result() -> LensResult:
    """A two-layer, two-frame result written by hand (no model): what the figures must show."""
    import numpy as np

    from tl_video.analyses.lens import encode_thumbnail
    from tl_video.analyses.records import RunHeader

    options = LensOptions(bin_size=1, keyword_set="synthetic", spatial_keywords=("red",), temporal_keywords=("left",))
    header = RunHeader(analysis="lens", model_id="fixed", model_config_hash="0", dataset="fixed", options=options.to_json(), seed=0)
    frames = [encode_thumbnail(np.full((8, 8, 3), value, dtype=np.uint8), 8) for value in (0, 255)]
    lens = {
        "key": "lens/a", "kind": "lens", "example_id": "a", "task": "t", "true_letter": "A", "probes": "p",
        "points": ["output of L1", "output of L2"], "n_video_tokens": 2,
        "top1_counts": [{" red": 1, "x": 1}, {" left": 1, " red": 1}],
        "letter_probabilities": {"A": [0.2, 0.9]}, "answer_probability": [0.2, 0.9],
    }
    grid = {
        "key": "grid/a", "kind": "grid", "example_id": "a", "task": "t", "question": "q", "probes": "p",
        "points": lens["points"], "video_grid": [[0, 0, 0], [1, 0, 0]], "frame_unit": "frame",
        "top_ids": [[[1], [2]], [[3], [1]]], "top_tokens": [[[" red"], ["x"]], [[" left"], [" red"]]],
        "top_probabilities": [[[0.5], [0.4]], [[0.6], [0.7]]], "frames_png": frames,
    }
    return LensResult(header=header, records=[lens, grid])


def test_figures_show_the_numbers_of_a_fixed_result():
    from tl_video.plots.lens import answer_probability, figures, token_grid, vocabulary_bars

    result = _fixed_result()
    spatial = vocabulary_bars(result, "spatial")
    (red,) = [trace for trace in spatial.data if trace.name == "red"]
    assert list(red.x) == ["L1", "L2"] and list(red.y) == [1.0, 1.0] and list(red.customdata) == [1, 1]
    assert [a.text for a in spatial.layout.annotations if a.text.endswith("%")] == ["50%", "50%"]
    temporal = vocabulary_bars(result, "temporal")
    (left,) = [trace for trace in temporal.data if trace.name == "left"]
    assert math.isnan(left.y[0]) and left.y[1] == 1.0
    grid = token_grid(result)
    labels = [list(trace.text) for trace in grid.data if trace.type == "scatter"]
    assert labels == [["red"], ["x"], ["left"], ["red"]]  # (L1, frame 1), (L1, frame 2), (L2, frame 1), (L2, frame 2)
    colours = [list(trace.textfont.color) for trace in grid.data if trace.type == "scatter"]
    assert colours == [["#0072B2"], ["#222222"], ["#D55E00"], ["#0072B2"]]
    assert sum(trace.type == "image" for trace in grid.data) == 4
    curve = answer_probability(result).data[-1]
    assert list(curve.y) == [0.2, 0.9] and list(curve.x) == [0, 1]
    assert set(figures(result)) == {"lens_vocabulary_spatial", "lens_vocabulary_temporal", "lens_token_grid", "lens_answer_probability"}


def test_large_grids_show_keyword_squares_instead_of_text():
    import numpy as np

    from tl_video.analyses.lens import encode_thumbnail
    from tl_video.analyses.records import RunHeader
    from tl_video.plots.lens import token_grid

    options = LensOptions(bin_size=1, keyword_set="paper", spatial_keywords=("cup",), temporal_keywords=("open",))
    header = RunHeader(analysis="lens", model_id="fixed", model_config_hash="0", dataset="fixed", options=options.to_json(), seed=0)
    cells = [[0, r, c] for r in range(5) for c in range(5)]  # 25 tokens per frame: too many to write
    words = [" cup" if i % 3 == 0 else " open" if i % 3 == 1 else " the" for i in range(25)]
    grid = {
        "key": "grid/a", "kind": "grid", "example_id": "a", "task": "t", "question": "q", "probes": "p", "points": ["output of L1"],
        "video_grid": cells, "frame_unit": "frame", "top_ids": [[[0]] * 25], "top_tokens": [[[w] for w in words]],
        "top_probabilities": [[[0.5]] * 25], "frames_png": [encode_thumbnail(np.zeros((10, 10, 3), dtype=np.uint8), 10)],
    }
    lens = {"key": "lens/a", "kind": "lens", "example_id": "a", "task": "t", "true_letter": "A", "probes": "p",
            "points": ["output of L1"], "n_video_tokens": 25, "top1_counts": [{}], "letter_probabilities": {"A": [1.0]},
            "answer_probability": [1.0]}
    fig = token_grid(LensResult(header=header, records=[lens, grid]))
    scatters = {trace.name: trace for trace in fig.data if trace.type == "scatter"}
    assert all(trace.mode == "markers" for trace in scatters.values())
    assert len(scatters["cup"].x) == 9 and len(scatters["open"].x) == 8  # the 8 " the" cells are invisible hover points
    assert scatters["cup"].showlegend and scatters["cup"].marker.color != scatters["open"].marker.color
