"""The open-ended variant on the built-in model: the probed token's metrics equal a knockout run by hand
(first generated token, and a later one after a truncated prefix), generation under knockout, read-back,
resume, and the anchor-word search."""

from __future__ import annotations

import pytest
import torch

from tl_video.analyses.open_ended import OpenEndedOptions, OpenEndedResult, find_anchor, run_open_ended, token_spans
from tl_video.interventions.knockout import knockout_hooks
from tl_video.interventions.presets import preset
from tl_video.interventions.windows import window_layers
from tl_video.model import generation
from tl_video.model.generation import greedy_generate
from tl_video.prompts.prepare import prepare_example

OPTIONS = dict(presets=("vql-to-ql",), layers=(1, 3), max_new_tokens=3)


@pytest.fixture(scope="module")
def two_examples(study_examples):
    return study_examples[2:4]


def _by_hand(model, prepared, spec, prefix):
    """Softmax after prompt + prefix: the unmasked run, and under `spec` recomputing the whole sequence
    (no KV cache) as generation does, so generated rows take the last prompt row's blocked keys."""
    tokens = torch.cat([prepared.tokens, torch.tensor([prefix], dtype=prepared.tokens.dtype)], dim=1)
    with torch.no_grad():
        base = model(tokens)[0, -1].float().softmax(-1)
        marker = generation._PROMPT_LENGTH.set(prepared.tokens.shape[1])  # what greedy_generate sets
        try:
            with model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, model.cfg.n_layers)):
                new = model(tokens)[0, -1].float().softmax(-1)
        finally:
            generation._PROMPT_LENGTH.reset(marker)
    return base, new


@pytest.mark.parametrize("position", [0, 2])
def test_anchor_metrics_equal_knockout_by_hand(toy_model, two_examples, position):
    result = run_open_ended(toy_model, two_examples, OpenEndedOptions(anchor_position=position, **OPTIONS), progress=False)
    example = two_examples[0]
    baseline = next(r for r in result.records if r["key"] == f"baseline/{example.example_id}")
    record = next(r for r in result.evaluated() if r["example_id"] == example.example_id
                  and r["label"] == "Question↛Last" and r["center"] == 3)
    prepared = prepare_example(toy_model, example)
    generated = greedy_generate(toy_model, prepared.tokens, max_new_tokens=3)[0, prepared.tokens.shape[1]:].tolist()
    assert baseline["generated_tokens"] == generated and baseline["anchor_index"] == position
    spec = preset("vql-to-ql", prepared.layout, window_layers(3, toy_model.cfg.n_layers, 2))[2]
    base, new = _by_hand(toy_model, prepared, spec, generated[:position])
    anchor = generated[position]
    assert record["anchor_token"] == anchor == int(base.argmax())
    assert record["p_anchor"] == pytest.approx(float(base[anchor]), abs=1e-5)
    assert record["p_anchor_knockout"] == pytest.approx(float(new[anchor]), abs=1e-5)
    assert record["change_anchor"] == pytest.approx(float((new[anchor] - base[anchor]) / base[anchor] * 100), abs=1e-3)
    assert record["new_token"] == int(new.argmax()) and record["kept"] == (int(new.argmax()) == anchor)
    with toy_model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, toy_model.cfg.n_layers)):
        under = greedy_generate(toy_model, prepared.tokens, max_new_tokens=3)[0, prepared.tokens.shape[1]:].tolist()
    assert record["generated_knockout"] == toy_model.tokenizer.decode(under)
    assert record["same_answer"] == (under == generated)
    assert result.curve("Question↛Last").n == 2 and result.accuracy("Question↛Last").n == (2, 2)


def test_reads_back_and_resumes_after_a_torn_write(toy_model, two_examples, tmp_path):
    options = OpenEndedOptions(generate_under_knockout=False, **OPTIONS)
    whole = run_open_ended(toy_model, two_examples, options, out_dir=tmp_path / "whole", progress=False)
    again = OpenEndedResult.read(tmp_path / "whole")
    assert again.records == whole.records and again.header.analysis == "open_ended"
    assert [f.to_json() for f in again.findings()] == [f.to_json() for f in whole.findings()]
    assert "anchor token's probability" in whole.findings()[0].sentence
    lines = (tmp_path / "whole" / "open_ended.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "open_ended.jsonl").write_text("".join(lines[:4]) + lines[4][:30])
    resumed = run_open_ended(toy_model, two_examples, options, out_dir=tmp_path / "part", resume=True, progress=False)
    assert resumed.records == whole.records
    from tl_video.plots.flow import figures

    figs = figures(whole)  # the flow figures read the open-ended metric and "kept" as accuracy
    assert set(figs) == {"flow_vql-to-ql_center", "accuracy_vql-to-ql_center"}
    assert figs["flow_vql-to-ql_center"].layout.yaxis.title.text.startswith("Δ p(anchor token)")
    assert figs["accuracy_vql-to-ql_center"].layout.yaxis.title.text == "anchor token still top-1 (%)"


def test_answer_without_the_anchor_word_is_recorded_not_analysed(toy_model, two_examples):
    options = OpenEndedOptions(anchor_words=("door",), **OPTIONS)
    result = run_open_ended(toy_model, two_examples[:1], options, progress=False)
    (baseline,) = result.records
    assert not baseline["selected"] and "fewer than 1 of the anchor words ['door']" in baseline["reason"]


def test_find_anchor_returns_the_first_token_of_the_nth_matching_word(toy_model):
    text = "The man opens the door, then Opens it again"
    spans = [(0, 3), (3, 7), (7, 10), (10, 13), (13, 17), (17, 22), (22, 23), (23, 28), (28, 30), (30, 35), (35, 38), (38, 44)]
    assert "".join(text[a:b] for a, b in spans) == text
    assert find_anchor(text, spans, ["opens"]) == (2, "opens")  # " op" + "ens": the word's first token
    assert find_anchor(text, spans, ["OPENS"], occurrence=2) == (8, "Opens")
    assert find_anchor(text, spans, ["door", "it"], occurrence=2) == (10, "it")
    assert find_anchor(text, spans, ["window"]) == (None, None)
    decoded, token_pieces = token_spans(toy_model.tokenizer, toy_model.tokenizer.encode(" the circle moves", add_special_tokens=False))
    assert decoded == " the circle moves" and token_pieces[-1][1] == len(decoded)
    assert find_anchor(decoded, token_pieces, ["moves"])[1] == "moves"


@pytest.mark.parametrize("kwargs, message", [
    ({"anchor_words": ("two words",)}, "single words"),
    ({"anchor_occurrence": 0}, "anchor_occurrence must be an integer >= 1"),
    ({"anchor_position": 5, "max_new_tokens": 5}, "past max_new_tokens"),
])
def test_bad_options_are_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OpenEndedOptions(**kwargs)
