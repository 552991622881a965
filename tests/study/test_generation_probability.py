"""Generation probability by layer: records equal a hand logit lens at every layer, both readouts; read, resume, figure."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tl_video.analyses.generation_probability import (
    ANALYSIS,
    GenerationProbabilityOptions,
    GenerationProbabilityResult,
    run_generation_probability,
)
from tl_video.analyses.records import RunHeader
from tl_video.analyses.scoring import score_example
from tl_video.plots.generation_probability import figures, probability_by_layer, probability_by_layer_by_task

N_EXAMPLES = 3  # one per task for the first three tasks of the benchmark's order (2 per task)


@pytest.fixture(scope="module")
def examples(study_examples):
    return study_examples[: 2 * N_EXAMPLES : 2]


@pytest.fixture(scope="module")
def run_dir(toy_model, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_prob")
    run_generation_probability(toy_model, examples, out_dir=out, progress=False)
    return out


@torch.no_grad()
def hand_probabilities(model, tokens, letters: dict[str, int], paper_compat: bool) -> np.ndarray:
    """[layer, option]: each resid_post at the last position through an explicit RMSNorm and W_U + b_U."""
    _, cache = model.run_with_cache(tokens)
    n = model.cfg.n_layers
    rows = []
    for layer in range(n):
        h = cache[f"blocks.{layer}.hook_resid_post"][0, -1].double()
        if not paper_compat or layer == n - 1:
            w = model.ln_final.w.double()
            h = h / torch.sqrt(h.pow(2).mean() + model.ln_final.eps) * w
        logits = h @ model.W_U.double() + model.b_U.double()
        rows.append(logits.softmax(-1)[list(letters.values())].numpy())
    return np.stack(rows)


def test_every_layer_equals_a_hand_logit_lens_in_both_readouts(toy_model, examples, run_dir):
    result = GenerationProbabilityResult.read(run_dir)
    scored = score_example(toy_model, examples[0], GenerationProbabilityOptions())
    for readout in ("final_norm", "paper_compat"):
        record = next(r for r in result.records if r.get("key") == f"{readout}/{examples[0].example_id}")
        assert record["letters"] == list(scored.letters)
        expected = hand_probabilities(toy_model, scored.prepared.tokens, scored.letters, readout == "paper_compat")
        np.testing.assert_allclose(np.asarray(record["probabilities"]).T, expected, atol=2e-5, rtol=1e-4)
    # the paper-compatible last row is the model's own output distribution, and the readouts differ before it
    paper = next(r for r in result.records if r.get("key") == f"paper_compat/{examples[0].example_id}")
    final = next(r for r in result.records if r.get("key") == f"final_norm/{examples[0].example_id}")
    own = scored.probabilities[list(scored.letters.values())].numpy()
    np.testing.assert_allclose(np.asarray(paper["probabilities"])[:, -1], own, atol=2e-5)
    assert not np.allclose(np.asarray(paper["probabilities"])[:, 0], np.asarray(final["probabilities"])[:, 0])


def test_result_reads_back_and_summarises_with_denominators(toy_model, examples, run_dir):
    result = GenerationProbabilityResult.read(run_dir)
    assert result.header.analysis == ANALYSIS and result.header.model_id == toy_model.cfg.model_name
    assert result.baseline()["n_examples"] == N_EXAMPLES
    n_selected = result.baseline()["n_selected"]
    assert len([r for r in result.records if r.get("kind") == ANALYSIS]) == 2 * n_selected
    curves = result.curves()
    assert len(curves["true option"]) == toy_model.cfg.n_layers == result.n_layers
    assert all(point.n == n_selected for point in curves["true option"])
    assert all(point.low <= point.mean <= point.high for point in curves["false options"])
    assert [f.n for f in result.findings()] == [n_selected, n_selected]


def test_resume_after_an_interrupted_run_writes_the_same_records(toy_model, examples, run_dir, tmp_path):
    lines = (run_dir / f"{ANALYSIS}.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / f"{ANALYSIS}.jsonl").write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # torn record
    resumed = run_generation_probability(toy_model, examples, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.records == GenerationProbabilityResult.read(run_dir).records
    assert (tmp_path / f"{ANALYSIS}.jsonl").read_text() == "".join(lines)


def test_options_are_validated_in_one_line():
    with pytest.raises(ValueError, match="readouts=.*final_norm, paper_compat"):
        GenerationProbabilityOptions(readouts=("final", "paper_compat"))
    with pytest.raises(ValueError, match="the string 'final_norm'"):
        GenerationProbabilityOptions(readouts="final_norm")


def fixed_result() -> GenerationProbabilityResult:
    """Two examples, three layers, letters A-C; the true option rises between L2 and L3."""
    header = RunHeader(analysis=ANALYSIS, model_id="m", model_config_hash="h", dataset="d", options={}, seed=0,
                       tl_video_version="0")
    records = [
        {"key": "final_norm/e1", "kind": ANALYSIS, "readout": "final_norm", "example_id": "e1", "task": "t1",
         "true_letter": "A", "letters": ["A", "B", "C"], "probabilities": [[0.2, 0.3, 0.9], [0.4, 0.3, 0.05], [0.4, 0.4, 0.05]]},
        {"key": "final_norm/e2", "kind": ANALYSIS, "readout": "final_norm", "example_id": "e2", "task": "t2",
         "true_letter": "B", "letters": ["A", "B", "C"], "probabilities": [[0.3, 0.3, 0.1], [0.4, 0.4, 0.8], [0.3, 0.3, 0.1]]},
    ]
    return GenerationProbabilityResult(header=header, records=records)


def test_curves_rise_and_figure_from_a_fixed_result():
    result = fixed_result()
    curves = result.curves()
    np.testing.assert_allclose([p.mean for p in curves["true option"]], [0.3, 0.35, 0.85])
    np.testing.assert_allclose([p.mean for p in curves["false options"]], [0.35, 0.325, 0.075])
    assert [p.mean for p in result.curves(task="t2")["true option"]] == [0.4, 0.4, 0.8]
    assert result.rise()[0] == 2
    (finding,) = result.findings()
    assert finding.sentence.startswith("The true option's probability rises most from L2 to L3 (mean 0.35 → 0.85")
    assert finding.n == 2
    (rows,) = result.tables().values()
    assert [row["layer"] for row in rows] == ["L1", "L2", "L3"]
    assert rows[2]["true option (final_norm)"].startswith("0.850 [") and rows[2]["n"] == 2

    fig = probability_by_layer(result)
    lines = [trace for trace in fig.data if trace.showlegend is not False]
    assert [trace.name for trace in lines] == ["true option", "false options (mean)"]
    np.testing.assert_allclose(lines[0].y, [0.3, 0.35, 0.85])
    assert list(lines[0].x) == [0, 1, 2] and fig.layout.xaxis.ticktext == ("L1", "L2", "L3")
    assert [trace.fill for trace in fig.data] == [None, "tonexty", None, None, "tonexty", None]
    assert fig.layout.yaxis.range == (0, 1.02)
    assert "n = 2 examples" in fig.layout.annotations[0].text
    assert list(figures(result)) == ["generation_probability", "generation_probability_by_task"]
    panels = probability_by_layer_by_task(result)
    assert [a.text for a in panels.layout.annotations[:2]] == ["t1 (n = 1)", "t2 (n = 1)"]
    assert [t.name for t in panels.data if t.showlegend] == ["true option", "false options (mean)"]
    np.testing.assert_allclose(panels.data[2].y, [0.2, 0.3, 0.9])  # t1's true option (A) after L1..L3
    with pytest.raises(ValueError, match="readout='paper_compat'.*readouts in this run: final_norm"):
        result.curves("paper_compat")


def test_separation_is_the_first_layer_from_which_the_true_option_leads_significantly():
    header = RunHeader(analysis=ANALYSIS, model_id="m", model_config_hash="h", dataset="d", options={}, seed=0,
                       tl_video_version="0")
    records = []
    for index in range(6):  # true option A: level with B at L1, ahead from L2 on in every example
        lead = 0.1 + 0.01 * index
        records.append({"key": f"final_norm/e{index}", "kind": ANALYSIS, "readout": "final_norm", "example_id": f"e{index}",
                        "task": "t", "true_letter": "A", "letters": ["A", "B"],
                        "probabilities": [[0.5 + (0.01 if index % 2 else -0.01), 0.5 + lead, 0.9], [0.5, 0.5 - lead, 0.1]]})
    result = GenerationProbabilityResult(header=header, records=records)
    layer, p = result.separation()
    assert layer == 1 and p == pytest.approx(2 / 64)  # exact sign-flip test: all 6 differences positive
    sentences = [f.sentence for f in result.findings()]
    assert sentences[1].startswith("From L2 on, the true option's letter is significantly more probable")
