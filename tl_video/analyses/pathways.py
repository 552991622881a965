"""Effective pathways: does the model still answer when only the flows that matter stay open?

One forward pass per example under a spec that keeps, per layer, only the effective pathways
(docs/methods.md, "Effective pathways"):

- cross-frame edges (frame i's queries to frames < i) only in the cross-frame range,
- Video→Question only in the video→question range,
- Question→Last only in the question→last range,
- Video→Last and Last→Last blocked in every layer (``video_to_last`` / ``last_to_last`` name layers
  where they stay open; keeping every flow in every layer blocks nothing),
- after the video→question range ends every video↔video edge is blocked (diagonal included), and
  after the question→last range ends every question↔question edge.

Ranges are lists of 0-indexed layers, or strings of 1-indexed inclusive layers as in prose
("L6–15", "L1-L4,L6"). Ranges not given are found from an information-flow result
(`tl_video.analyses.flow.effective_ranges`) by the rule ``RANGE_RULE``: the sweep's centre layers
are grouped in bins (the paper's 5 of 32 layers, scaled to the model's depth: 1 layer of 6), and a
bin's layers are effective when the mean of their mean relative changes of the true option's
probability is below the threshold (−5 % by default), read from the curves "No cross-frame
interactions", "Video↛Question" and "Question↛Last". The resolved ranges, their source and the
rule in words are written into the record file's header, so a resumed run keeps them.

Three conditions per selected example, one record each (``key = "<condition>/<example_id>"``):
``full_attention`` (the baseline pass itself), ``pathways``, and ``random``: as many causal edges
as the pathway suppresses, per layer, drawn uniformly among the positions from the video's first
token onward (diagonal included), with a seed derived from the run's seed and the example id.
Each record holds the answer (argmax over the vocabulary), whether it is the true letter, the
true letter's probability, the edge counts (kept and suppressed over the causal triangle,
N(N+1)/2 per layer, summed over layers) and the spec JSON. A condition whose probabilities are not
finite (an fp16 overflow under the knockout) is recorded as skipped with its reason instead
(`PathwayResult.skipped`) and counts in no accuracy, edge total or test.

    >>> result = run_pathways(model, examples, PathwayOptions(video_to_question="L2-4", cross_frame="L1-3",
    ...                       question_to_last="L3-5"), out_dir="study")                    # doctest: +SKIP
    >>> result.accuracy("pathways")                                                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float

from tl_video.analyses.flow import default_bin_size, effective_ranges
from tl_video.analyses.records import RecordSink, RecordedResult, RunHeader
from tl_video.analyses.scoring import (
    ScoredExample, StudyOptions, baseline_summary, not_finite_reason, not_finite_table, scored_examples,
)
from tl_video.analyses.statistics import Finding, MeanCI, mean_ci, paired_permutation_p
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.data.examples import VideoQAExample
from tl_video.interventions.knockout import EdgeCounts, KnockoutSpec, edge_counts
from tl_video.interventions.presets import effective_pathway_spec, random_baseline_for
from tl_video.prompts.layout import TokenLayout

ANALYSIS = "pathways"
POOLED = "pooled"
FLOWS: tuple[str, ...] = ("cross_frame", "video_to_question", "question_to_last")  # ranges found from a flow result
ALWAYS_BLOCKED: tuple[str, ...] = ("video_to_last", "last_to_last")  # blocked in every layer unless given
FLOW_NAMES = {"cross_frame": "cross-frame", "video_to_question": "video→question", "question_to_last": "question→last",
              "video_to_last": "video→last", "last_to_last": "last→last"}
FLOW_CURVES = {  # the information-flow curve each range is read from
    "cross_frame": "No cross-frame interactions", "video_to_question": "Video↛Question", "question_to_last": "Question↛Last",
}
CONDITIONS = {"full_attention": "full attention", "pathways": "effective pathways", "random": "random blocking"}
DEFAULT_THRESHOLD = -5.0
RANGE_RULE = ("centre layers of the information-flow sweep (flow blocked in the centre window) grouped in bins of "
              "{bin_size} (5 of 32 layers, scaled to the model's depth); a bin's layers are effective when the mean of "
              "their mean relative changes of the true option's probability is below {threshold:g}%")
_RANGE_ITEM = re.compile(r"^L(?P<start>\d+)(?:\s*[-–—]\s*L?(?P<stop>\d+))?$", re.IGNORECASE)

LayerRange = tuple[int, ...]


def parse_layers(value: Any, what: str) -> LayerRange:
    """A range as 0-indexed layers: a list of integers as given, or a string of 1-indexed inclusive spans ("L6–15")."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none"):
            return ()
        layers: list[int] = []
        for item in text.split(","):
            match = _RANGE_ITEM.match(item.strip())
            if not match:
                raise ValueError(f"{what}={value!r}: write 1-indexed inclusive spans such as 'L6-15' or 'L1-L4,L6', "
                                 "or give a list of 0-indexed layers")
            start, stop = int(match["start"]), int(match["stop"] or match["start"])
            if start < 1 or stop < start:
                raise ValueError(f"{what}={value!r}: span {item.strip()!r} must run from L1 upward, start <= end")
            layers.extend(range(start - 1, stop))
        return tuple(sorted(set(layers)))
    if isinstance(value, (bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{what}={value!r}: give a list of 0-indexed layers or a string such as 'L6-15'")
    layers = []
    for layer in value:
        if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, (int, np.integer)) or layer < 0:
            raise ValueError(f"{what}: layer {layer!r} must be a non-negative integer (0-indexed)")
        layers.append(int(layer))
    return tuple(sorted(set(layers)))


def layer_span_text(layers: Sequence[int]) -> str:
    """(5, 6, 7, 9) -> "L6–L8, L10" (1-indexed, as in prose); () -> "no layer"."""
    layers = sorted(layers)
    if not layers:
        return "no layer"
    runs, start = [], layers[0]
    for previous, layer in zip(layers, layers[1:] + [None]):
        if layer != previous + 1:
            runs.append(f"L{start + 1}" if start == previous else f"L{start + 1}–L{previous + 1}")
            start = layer
    return ", ".join(runs)


@dataclass(frozen=True, kw_only=True)
class PathwayOptions(StudyOptions):
    """Options of `run_pathways`.

    Each range is a list of 0-indexed layers or a string of 1-indexed inclusive spans ("L6–15");
    None = found from the information-flow result (threshold: percent change, −5 by default).
    """

    cross_frame: LayerRange | str | None = None
    video_to_question: LayerRange | str | None = None
    question_to_last: LayerRange | str | None = None
    video_to_last: LayerRange | str = ()  # kept nowhere by default (the paper's pathways block it in every layer)
    last_to_last: LayerRange | str = ()
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in FLOWS + ALWAYS_BLOCKED:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_layers(value, name))
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number of percent (e.g. -5), got {self.threshold!r}")

    def given_ranges(self) -> dict[str, LayerRange]:
        return {name: getattr(self, name) for name in FLOWS if getattr(self, name) is not None}

    def to_json(self) -> dict[str, Any]:
        return super().to_json() | {
            name: None if getattr(self, name) is None else list(getattr(self, name)) for name in FLOWS + ALWAYS_BLOCKED
        }


def ranges_from_flow(flow_result: Any, threshold: float = DEFAULT_THRESHOLD) -> dict[str, LayerRange]:
    """The three ranges found from an information-flow result by `RANGE_RULE`."""
    found = effective_ranges(flow_result, threshold=threshold)
    missing = [FLOW_CURVES[name] for name in FLOWS if FLOW_CURVES[name] not in found]
    if missing:
        raise ValueError(f"the information-flow result has no curve {', '.join(map(repr, missing))}; run flow with the "
                         "presets cross-frame and vql-to-ql, or give the ranges (cross_frame=, video_to_question=, "
                         "question_to_last=)")
    return {name: tuple(found[FLOW_CURVES[name]]) for name in FLOWS}


def resolve_ranges(options: PathwayOptions, n_layers: int, flow_result: Any = None) -> tuple[dict[str, LayerRange], str]:
    """(ranges, source): the given ranges, completed from ``flow_result`` where missing; checked against the model."""
    ranges = options.given_ranges()
    source = "given"
    missing = [name for name in FLOWS if name not in ranges]
    if missing:
        if flow_result is None:
            raise ValueError(f"pathways: no range for {', '.join(missing)} and no information-flow result to find it "
                             "from; give the ranges (e.g. video_to_question='L2-4') or run flow first")
        found = ranges_from_flow(flow_result, options.threshold)
        ranges |= {name: found[name] for name in missing}
        source = "flow" if len(missing) == len(FLOWS) else f"given, flow for {', '.join(missing)}"
    ranges |= {name: getattr(options, name) for name in ALWAYS_BLOCKED}
    for name, layers in ranges.items():
        bad = [layer for layer in layers if layer >= n_layers]
        if bad:
            raise ValueError(f"pathways {name}: layers {bad} (0-indexed) are out of range for a model with "
                             f"{n_layers} layers (0..{n_layers - 1})")
    for name in ("video_to_question", "question_to_last"):  # their end decides what is blocked after them
        if not ranges[name]:
            how = ("the information-flow curves show no effective layer for it by the rule "
                   f"(change below {options.threshold:g}%)" if name in missing else "it is empty")
            raise ValueError(f"pathways {name}: {how}; it must name at least one layer, e.g. {name}='L2-4'")
    return {name: ranges[name] for name in FLOWS + ALWAYS_BLOCKED}, source


def pathway_spec(layout: TokenLayout, n_layers: int, ranges: Mapping[str, LayerRange]) -> KnockoutSpec:
    """The effective-pathway spec of one input (keep only the pathways in their ranges)."""
    return effective_pathway_spec(layout, n_layers, **ranges)


def example_seed(seed: int, example_id: str) -> int:
    """A per-example seed for random blocking: stable across runs and machines, different per example."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{example_id}".encode()).digest()[:4], "little")


def _record(condition: str, scored: ScoredExample, probabilities: Float[torch.Tensor, "d_vocab"], edges: EdgeCounts,
            spec: KnockoutSpec | None, **extra: Any) -> dict[str, Any]:
    """One condition's record for one example: the answer at the last position, the edges, the spec; or, when
    the probabilities are not finite (an fp16 overflow under the knockout), a skipped record with the reason."""
    identity = {"key": f"{condition}/{scored.example.example_id}", "kind": ANALYSIS, "condition": condition,
                "example_id": scored.example.example_id, "task": scored.task}
    reason = not_finite_reason("the probabilities under this condition", probabilities)
    if reason is not None:
        return identity | {"skipped": True, "reason": reason, "spec": None if spec is None else spec.to_json(), **extra}
    answer = int(probabilities.argmax())
    return identity | {
        "skipped": False, "true_letter": scored.true_letter,
        "true_token": scored.true_token, "answer_token": answer, "correct": scored.is_true(answer),
        "p_true": float(probabilities[scored.true_token]),
        "letter_probabilities": {letter: float(probabilities[token]) for letter, token in scored.letters.items()},
        "edges": edges.to_json(), "spec": None if spec is None else spec.to_json(), **extra,
    }


def run_pathways(
    model: Any, examples: Sequence[VideoQAExample], options: PathwayOptions = PathwayOptions(), *,
    out_dir: str | Path | None = None, resume: bool = False, progress: bool = True, flow_result: Any = None,
) -> "PathwayResult":
    """Accuracy under full attention, the effective pathways, and random blocking of as many edges, per example."""
    n_layers = model.cfg.n_layers
    ranges, source = resolve_ranges(options, n_layers, flow_result)
    rule = "given by the user" if source == "given" else RANGE_RULE.format(
        threshold=options.threshold, bin_size=default_bin_size(flow_result.n_layers))
    header = RunHeader.for_model(
        model, analysis=ANALYSIS, dataset=options.dataset, seed=options.seed,
        options=options.to_json() | {"ranges": {name: list(layers) for name, layers in ranges.items()},
                                     "range_source": source, "range_rule": rule},
    )
    path = None if out_dir is None else Path(out_dir) / f"{ANALYSIS}.jsonl"
    sink = RecordSink.open(path, header, resume=resume)
    for scored in scored_examples(model, examples, options, sink=sink, progress=progress, desc="effective pathways"):
        example_id = scored.example.example_id
        if all(sink.has(f"{condition}/{example_id}") for condition in CONDITIONS):
            continue
        layout = scored.prepared.layout
        spec = pathway_spec(layout, n_layers, ranges)
        seed = example_seed(options.seed, example_id)
        random_spec = random_baseline_for(spec, layout, n_layers, seed=seed)
        edges, random_edges = edge_counts(spec, layout, n_layers), edge_counts(random_spec, layout, n_layers)
        pathway_probabilities, random_probabilities = knockout_probabilities(model, scored.prepared, [spec, random_spec])
        records = [
            _record("full_attention", scored, scored.probabilities, edge_counts(KnockoutSpec(), layout, n_layers), None),
            _record("pathways", scored, pathway_probabilities, edges, spec),
            _record("random", scored, random_probabilities, random_edges, random_spec, random_seed=seed),
        ]
        sink.append_many([record for record in records if not sink.has(record["key"])])  # one write per example
    return PathwayResult(header=sink.header, records=list(sink.records))


def _rounded(value: float, digits: int) -> float | int | str:
    """A table cell: ``value`` rounded, or "n/a" where no example was evaluated (NaN)."""
    if not np.isfinite(value):
        return "n/a"
    return round(value) if digits == 0 else round(value, digits)


def _percent(value: float, digits: int) -> str:
    return f"{100 * value:.{digits}f}%" if np.isfinite(value) else "n/a"


@dataclass(frozen=True)
class Accuracy:
    """Correct answers under one condition: ``n_correct`` of ``n`` analysed examples, with a 95% interval."""

    condition: str
    n_correct: int
    n: int
    ci: MeanCI  # of the per-example correctness (0/1), i.e. of the accuracy

    @property
    def rate(self) -> float:
        return self.n_correct / self.n if self.n else float("nan")

    def __str__(self) -> str:
        return f"{self.rate:.1%} ({self.n_correct}/{self.n}; 95% CI {self.ci.low:.1%}–{self.ci.high:.1%})"

    def to_json(self) -> dict[str, Any]:
        return {"condition": self.condition, "n_correct": self.n_correct, "n": self.n, "accuracy": self.rate,
                "ci": self.ci.to_json()}


@dataclass(frozen=True)
class Edges:
    """Attention edges under one condition, summed over layers: per example on average and over all examples."""

    condition: str
    kept: float  # mean per example
    suppressed: float
    baseline: float
    kept_total: int  # summed over the examples
    suppressed_total: int
    baseline_total: int
    kept_fraction: MeanCI  # of the per-example kept fraction

    @property
    def kept_percent(self) -> float:
        return 100.0 * self.kept_total / self.baseline_total if self.baseline_total else float("nan")

    @property
    def suppressed_percent(self) -> float:
        return 100.0 - self.kept_percent

    def to_json(self) -> dict[str, Any]:
        return {"condition": self.condition, "kept_per_example": self.kept, "suppressed_per_example": self.suppressed,
                "baseline_per_example": self.baseline, "kept_total": self.kept_total,
                "suppressed_total": self.suppressed_total, "baseline_total": self.baseline_total,
                "kept_percent": self.kept_percent, "suppressed_percent": self.suppressed_percent}


@dataclass(frozen=True)
class PathwayResult(RecordedResult):
    """The records of one effective-pathway run, with accuracy, edge counts and findings."""

    ANALYSIS: ClassVar[str] = ANALYSIS

    @property
    def ranges(self) -> dict[str, LayerRange]:
        """The layer ranges (0-indexed) the pathways kept, per flow."""
        return {name: tuple(layers) for name, layers in self.header.options["ranges"].items()}

    @property
    def range_source(self) -> str:
        return self.header.options["range_source"]

    @property
    def range_rule(self) -> str:
        return self.header.options["range_rule"]

    def baseline(self) -> dict[str, int]:
        """Examples scored, answered correctly and analysed (the denominators)."""
        return baseline_summary(self.records)

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r["task"] for r in self._records("full_attention")))

    def correct(self, condition: str, task: str = POOLED) -> dict[str, bool]:
        """{example_id: answered correctly} under ``condition``."""
        return {r["example_id"]: bool(r["correct"]) for r in self._records(condition, task)}

    def accuracy(self, condition: str, task: str = POOLED) -> Accuracy:
        values = list(self.correct(condition, task).values())
        return Accuracy(CONDITIONS[condition], int(sum(values)), len(values),
                        mean_ci(np.asarray(values, dtype=float), seed=self.seed))

    def retained(self, condition: str, task: str = POOLED) -> Accuracy:
        """Retained accuracy: of the examples answered correctly with full attention, those still answered
        correctly under ``condition`` (equal to the accuracy when only correct examples are analysed)."""
        full, under = self.correct("full_attention", task), self.correct(condition, task)
        values = [under[e] for e, correct in full.items() if correct and e in under]
        return Accuracy(CONDITIONS[condition], int(sum(values)), len(values),
                        mean_ci(np.asarray(values, dtype=float), seed=self.seed))

    def edges(self, condition: str, task: str = POOLED) -> Edges:
        """Edges kept and suppressed under ``condition``, summed over layers (per example and in total)."""
        counts = [r["edges"] for r in self._records(condition, task)]
        kept, suppressed, baseline = (np.asarray([c[name] for c in counts], dtype=float)
                                      for name in ("kept", "suppressed", "baseline"))
        per_example = [float(values.mean()) if counts else float("nan") for values in (kept, suppressed, baseline)]
        return Edges(
            CONDITIONS[condition], *per_example, int(kept.sum()), int(suppressed.sum()), int(baseline.sum()),
            mean_ci(kept / np.where(baseline > 0, baseline, np.nan), seed=self.seed),
        )

    def p_true(self, condition: str, task: str = POOLED) -> MeanCI:
        """The true option's probability under ``condition``: mean with its 95% interval."""
        return mean_ci([r["p_true"] for r in self._records(condition, task)], seed=self.seed)

    def chance_accuracy(self, task: str = POOLED) -> float:
        """Accuracy of guessing uniformly among the options: the mean of 1 / (number of options) over examples."""
        records = self._records("full_attention", task)
        return float(np.mean([1.0 / len(r["letter_probabilities"]) for r in records])) if records else float("nan")

    def pathways_vs_random(self, task: str = POOLED) -> float:
        """Paired sign-flip permutation p-value: correctness under the pathways vs under random blocking."""
        pathways, random = self.correct("pathways", task), self.correct("random", task)
        shared = sorted(set(pathways) & set(random))
        return paired_permutation_p([float(pathways[e]) for e in shared], [float(random[e]) for e in shared], seed=self.seed)

    def table(self, task: str = POOLED) -> list[dict[str, Any]]:
        """One row per condition: edges kept (per example and %), accuracy and retained accuracy with their
        denominators and intervals."""
        rows = []
        for condition in CONDITIONS:
            edges, accuracy, retained = self.edges(condition, task), self.accuracy(condition, task), self.retained(condition, task)
            rows.append({"condition": CONDITIONS[condition], "edges_kept_per_example": edges.kept,
                         "edges_kept_percent": edges.kept_percent, "edges_suppressed_percent": edges.suppressed_percent,
                         "n_correct": accuracy.n_correct, "n": accuracy.n, "accuracy": accuracy.rate,
                         "accuracy_low": accuracy.ci.low, "accuracy_high": accuracy.ci.high,
                         "n_retained": retained.n_correct, "n_full_correct": retained.n, "retained": retained.rate,
                         "retained_low": retained.ci.low, "retained_high": retained.ci.high})
        return rows

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The report's tables: accuracy and edges per condition, and the layer ranges the pathways kept."""
        conditions = [
            {"condition": row["condition"], "edges kept per example": _rounded(row["edges_kept_per_example"], 0),
             "edges kept (%)": _rounded(row["edges_kept_percent"], 1),
             "edges suppressed (%)": _rounded(row["edges_suppressed_percent"], 1),
             "accuracy": f"{_percent(row['accuracy'], 1)} ({row['n_correct']}/{row['n']})",
             "95% CI": (f"{100 * row['accuracy_low']:.0f}–{100 * row['accuracy_high']:.0f}%" if row["n"] else "n/a"),
             "retained (of full-attention correct)": f"{_percent(row['retained'], 1)} ({row['n_retained']}/{row['n_full_correct']})"}
            for row in self.table()
        ]
        ranges = [{"flow": FLOW_NAMES[name], "kept in (1-indexed)": layer_span_text(layers) if layers else "nowhere",
                   "layers (0-indexed)": list(layers) or "none"} for name, layers in self.ranges.items()]
        rule = f"Layer ranges kept ({'given' if self.range_source == 'given' else 'rule: ' + self.range_rule})"
        return {"Effective pathways vs full attention and random blocking": conditions, rule: ranges} | not_finite_table(self.records)

    def describe_ranges(self) -> str:
        """The kept ranges in prose (1-indexed), e.g. "cross-frame L1–L3; video→question L2–L4; question→last L3–L5;
        video→last and last→last nowhere"."""
        ranges = self.ranges
        parts = [f"{FLOW_NAMES[name]} {layer_span_text(ranges[name])}" for name in FLOWS]
        closed = [FLOW_NAMES[name] for name in ALWAYS_BLOCKED if not ranges.get(name)]
        parts += [f"{FLOW_NAMES[name]} {layer_span_text(ranges[name])}" for name in ALWAYS_BLOCKED if ranges.get(name)]
        if closed:
            parts.append(f"{' and '.join(closed)} nowhere")
        return "; ".join(parts)

    def findings(self) -> list[Finding]:
        """Accuracy kept by the pathways, against full attention and against random blocking of as many edges."""
        full, pathways, random = (self.accuracy(c) for c in CONDITIONS)
        if not pathways.n:
            return []
        edges = self.edges("pathways")
        where = f"({self.describe_ranges()}; ranges {'found from the information-flow curves' if self.range_source != 'given' else 'given'})"
        shared = sorted(set(self.correct("pathways")) & set(self.correct("full_attention")))
        full_correct, path_correct = self.correct("full_attention"), self.correct("pathways")
        skipped = self.skipped()
        unreadable = (f"; {len(skipped)} run{'s' if len(skipped) > 1 else ''} of a condition on an example gave probabilities "
                      "that are not finite and count in no number") if skipped else ""
        return [
            Finding(
                sentence=(f"Keeping only the effective pathways {where} keeps {edges.kept_percent:.0f}% of attention edges "
                          f"({edges.suppressed_percent:.0f}% suppressed) and answers {pathways.n_correct}/{pathways.n} "
                          f"correctly ({pathways.rate:.0%}), against {full.n_correct}/{full.n} ({full.rate:.0%}) with full attention{unreadable}."),
                test="paired sign-flip permutation test of per-example correctness, pathways vs full attention",
                p_value=paired_permutation_p([float(path_correct[e]) for e in shared],
                                             [float(full_correct[e]) for e in shared], seed=self.seed),
                n=len(shared),
            ),
            Finding(
                sentence=(f"Blocking as many randomly chosen edges instead answers {random.n_correct}/{random.n} correctly "
                          f"({random.rate:.0%}), against {pathways.n_correct}/{pathways.n} ({pathways.rate:.0%}) for the "
                          "effective pathways."),
                test="paired sign-flip permutation test of per-example correctness, pathways vs random blocking",
                p_value=self.pathways_vs_random(), n=min(pathways.n, random.n),
            ),
        ]

    def skipped(self) -> list[dict[str, Any]]:
        """Conditions that could not be evaluated on an example (probabilities not finite), each with its reason;
        they count in no accuracy or edge total."""
        return [r for r in self.records if r.get("kind") == ANALYSIS and r.get("skipped")]

    def _records(self, condition: str, task: str = POOLED) -> list[dict[str, Any]]:
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")
        return [r for r in self.records if r.get("kind") == ANALYSIS and r["condition"] == condition
                and task in (POOLED, r["task"]) and not r.get("skipped")]
