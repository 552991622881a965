"""Generation probability by layer: how early the answer letter becomes the model's choice.

For every analysed example the residual stream at the last position (the answer position after
"Best option:(") is read after each layer as a distribution over the vocabulary,
softmax(W_U · norm(h_l) + b_U), and the probabilities of the true option's letter and of each
false option's letter are kept (docs/methods.md, "Generation probability by layer"). Two readouts:

- ``final_norm`` (default): the model's final RMSNorm before W_U at every layer, the correct
  logit lens;
- ``paper_compat``: the reference code's readout, the raw residual after layers L1..L(n-1) and the
  final-normed output of the last layer, so the last row equals the model's own output distribution.

One record per example x readout (``key = "<readout>/<example_id>"``) holds the per-layer
probabilities of every option letter; `GenerationProbabilityResult` summarises them as curves
(mean with a seeded bootstrap 95% interval per layer, per task and pooled) and states where the
true option's probability rises. A readout that is not finite at some layer (an fp16 overflow) is
recorded as skipped with the reason naming the layers (``skipped: True``) and counts in no curve.

    >>> result = run_generation_probability(model, examples, out_dir="study")      # doctest: +SKIP
    >>> result.curves()["true option"][-1]                                          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from jaxtyping import Float

from tl_video.analyses.records import RecordSink, RecordedResult, RunHeader
from tl_video.analyses.scoring import StudyOptions, baseline_summary, not_finite_reason, not_finite_table, scored_examples
from tl_video.analyses.statistics import Finding, MeanCI, mean_ci, paired_permutation_p
from tl_video.data.examples import VideoQAExample
from tl_video.interventions.logit_lens import option_probabilities_by_layer

ANALYSIS = "generation_probability"
READOUTS: dict[str, str] = {
    "final_norm": "softmax(W_U · ln_final(h_l)) after every layer (logit lens with the final norm)",
    "paper_compat": "raw h_l after L1..L(n-1), ln_final(h_n) after the last layer (the reference code's readout)",
}
POOLED = "pooled"


@dataclass(frozen=True, kw_only=True)
class GenerationProbabilityOptions(StudyOptions):
    """Options of `run_generation_probability`: which readouts to compute (both by default)."""

    readouts: tuple[str, ...] = ("final_norm", "paper_compat")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.readouts, str):
            raise ValueError(f"readouts must be a list of readout names, got the string {self.readouts!r}; "
                             f"e.g. [{self.readouts!r}]")
        readouts = tuple(self.readouts)
        unknown = [r for r in readouts if r not in READOUTS]
        if unknown or not readouts:
            raise ValueError(f"readouts={list(readouts)!r}: give one or more of {', '.join(READOUTS)}")
        object.__setattr__(self, "readouts", tuple(dict.fromkeys(readouts)))

    def to_json(self) -> dict[str, Any]:
        return super().to_json() | {"readouts": list(self.readouts)}


def run_generation_probability(
    model: Any, examples: Sequence[VideoQAExample], options: GenerationProbabilityOptions = GenerationProbabilityOptions(),
    *, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
) -> "GenerationProbabilityResult":
    """Per selected example and readout, each option letter's probability after every layer."""
    header = RunHeader.for_model(model, analysis=ANALYSIS, dataset=options.dataset, options=options.to_json(), seed=options.seed)
    path = None if out_dir is None else Path(out_dir) / f"{ANALYSIS}.jsonl"
    sink = RecordSink.open(path, header, resume=resume)
    for scored in scored_examples(model, examples, options, sink=sink, progress=progress, desc="generation probability"):
        for readout in options.readouts:
            key = f"{readout}/{scored.example.example_id}"
            if sink.has(key):
                continue
            letters, probabilities = option_probabilities_by_layer(
                model, scored.prepared, scored.letters, paper_compat=readout == "paper_compat"
            )
            record = {"key": key, "kind": ANALYSIS, "readout": readout, "readout_definition": READOUTS[readout],
                      "example_id": scored.example.example_id, "task": scored.task}
            reason = not_finite_reason("the letter probabilities", probabilities,
                                       [f"output of L{layer + 1}" for layer in range(len(probabilities))])
            if reason is not None:
                sink.append(record | {"skipped": True, "reason": reason})
                continue
            sink.append(record | {
                "skipped": False, "true_letter": scored.true_letter,
                "letters": letters, "probabilities": probabilities.T.tolist(),  # [option][layer]
            })
    return GenerationProbabilityResult(header=sink.header, records=list(sink.records))


@dataclass(frozen=True)
class GenerationProbabilityResult(RecordedResult):
    """The records of one generation-probability run, with curves and findings."""

    ANALYSIS: ClassVar[str] = ANALYSIS

    @property
    def readouts(self) -> list[str]:
        return list(dict.fromkeys(r["readout"] for r in self._layer_records()))

    @property
    def n_layers(self) -> int:
        records = self._layer_records()
        return len(records[0]["probabilities"][0]) if records else 0

    def tasks(self) -> list[str]:
        """The tasks with analysed examples, in first-seen order."""
        return list(dict.fromkeys(r["task"] for r in self._layer_records()))

    def baseline(self) -> dict[str, int]:
        """Examples scored, answered correctly and analysed (the denominators)."""
        return baseline_summary(self.records)

    def per_example(self, readout: str = "final_norm", task: str = POOLED) -> dict[str, Float[np.ndarray, "example layer"]]:
        """{"true option": [example, layer], "false options": [example, layer] (mean over the false letters)}."""
        records = [r for r in self._layer_records() if r["readout"] == readout and task in (POOLED, r["task"])]
        if not records and readout in self.readouts and task in self.tasks():  # every one of them skipped (not finite)
            return {"true option": np.zeros((0, self.n_layers)), "false options": np.zeros((0, self.n_layers))}
        if not records:
            known = ", ".join(self.readouts) or "none"
            raise ValueError(f"no records for readout={readout!r}, task={task!r}; readouts in this run: {known}; "
                             f"tasks: {', '.join(self.tasks()) or 'none'}")
        true, false = [], []
        for record in records:
            table = dict(zip(record["letters"], np.asarray(record["probabilities"], dtype=float)))
            true.append(table[record["true_letter"]])
            others = [row for letter, row in table.items() if letter != record["true_letter"]]
            false.append(np.mean(others, axis=0) if others else np.full(self.n_layers, np.nan))
        return {"true option": np.stack(true), "false options": np.stack(false)}

    def curves(self, readout: str = "final_norm", task: str = POOLED) -> dict[str, list[MeanCI]]:
        """Per layer, the mean probability of the true option and of the false options, with 95% intervals."""
        return {
            name: [mean_ci(values[:, layer], seed=self.seed) for layer in range(values.shape[1])]
            for name, values in self.per_example(readout, task).items()
        }

    def rise(self, readout: str = "final_norm", task: str = POOLED) -> tuple[int, float]:
        """(layer l, p): the largest mean increase of the true option's probability from layer l-1 to l.

        p is a paired sign-flip permutation test of the probabilities after l-1 and after l. The layer
        is chosen as the largest mean increase, so p is not corrected for that choice.
        """
        true = self.per_example(readout, task)["true option"]
        if true.shape[1] < 2:
            raise ValueError("the rise between layers needs a model with at least 2 layers")
        steps = np.nanmean(np.diff(true, axis=1), axis=0)
        layer = int(np.argmax(steps)) + 1
        return layer, paired_permutation_p(true[:, layer], true[:, layer - 1], seed=self.seed)

    def separation(self, readout: str = "final_norm", task: str = POOLED, alpha: float = 0.05) -> tuple[int | None, float]:
        """(layer l, p): the first layer from which, through the last layer, the true option's letter is more
        probable than the false options' on average with a paired sign-flip permutation p < ``alpha`` at every
        layer (uncorrected); p is the test at l. (None, nan) if the last layer does not qualify."""
        values = self.per_example(readout, task)
        true, false = values["true option"], values["false options"]
        first, p_first = None, float("nan")
        for layer in reversed(range(true.shape[1])):
            p = paired_permutation_p(true[:, layer], false[:, layer], seed=self.seed)
            if not (np.nanmean(true[:, layer]) > np.nanmean(false[:, layer]) and p < alpha):
                break
            first, p_first = layer, p
        return first, p_first

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The report's table: per layer, the mean probability of the true and false options [95% CI], one column
        pair per readout."""
        curves = {readout: self.curves(readout) for readout in self.readouts}
        rows = []
        for layer in range(self.n_layers):
            row: dict[str, Any] = {"layer": f"L{layer + 1}"}
            for readout, curve in curves.items():
                for name in ("true option", "false options"):
                    point = curve[name][layer]
                    row[f"{name} ({readout})"] = f"{point.mean:.3f} [{point.low:.3f}, {point.high:.3f}]"
            row["n"] = curve["true option"][layer].n
            rows.append(row)
        return {"Answer-letter probability by layer, mean [95% CI] (pooled over tasks)": rows} | not_finite_table(self.records)

    def findings(self) -> list[Finding]:
        """Where the true option's probability rises, and from which layer it leads the false options, per
        readout (pooled over tasks)."""
        out = []
        for readout in self.readouts:
            true = self.per_example(readout)["true option"]
            if true.shape[1] < 2:
                continue
            layer, p = self.rise(readout)
            before, after = np.nanmean(true[:, layer - 1]), np.nanmean(true[:, layer])
            how = "final-norm logit lens" if readout == "final_norm" else "paper-compatible readout"
            out.append(Finding(
                sentence=(f"The true option's probability rises most from L{layer} to L{layer + 1} "
                          f"(mean {before:.2f} → {after:.2f}; {how})."),
                test="paired sign-flip permutation test, layer before vs after (layer chosen as the largest mean increase)",
                p_value=p, n=int(true.shape[0]),
            ))
            first, p = self.separation(readout)
            if first is not None:
                false = self.per_example(readout)["false options"]
                out.append(Finding(
                    sentence=(f"From L{first + 1} on, the true option's letter is significantly more probable than the false options' "
                              f"(mean {np.nanmean(true[:, first]):.2f} vs {np.nanmean(false[:, first]):.2f} at "
                              f"L{first + 1}; {how})."),
                    test=(f"paired sign-flip permutation test, true option vs mean of the false options at L{first + 1} "
                          "(p < 0.05 at every layer from there, uncorrected)"),
                    p_value=p, n=int(true.shape[0]),
                ))
        return out

    def skipped(self) -> list[dict[str, Any]]:
        """Readouts that could not be made on an example (not finite), each with its reason."""
        return [r for r in self.records if r.get("kind") == ANALYSIS and r.get("skipped")]

    def _layer_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == ANALYSIS and not r.get("skipped")]
