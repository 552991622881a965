"""Information flow: how much the answer depends on each attention flow, layer by layer (docs/methods.md).

For every selected example (answered correctly at baseline by default) and every configuration
(preset or user flow x window style x centre layer), the flow's edges are blocked in the
window's layers and the last position's full-vocabulary softmax is read again
(`tl_video.analyses.sweep.knockout_probabilities`, one call per example for all its specs).
Each record holds both relative changes, ×100 (percent):

- ``change_answer`` = (p_new(a) − p_base(a)) / p_base(a) × 100, a = the baseline argmax token;
- ``change_true``   = the same for the true option's letter token;

plus the new argmax and whether it is the true letter (accuracy under knockout). Curves give the
mean with a seeded bootstrap 95% interval per centre layer, per task and pooled.

Window size: ``window_k=None`` keeps the paper's fraction of depth, k = max(1, round(9/32 · n))
(9 of 32 layers; 2 of the built-in model's 6). A k larger than the model is clipped to n with a
warning and a note in the result, never refused.

Findings (`FlowResult.findings`): at each centre layer, a paired sign-flip permutation test of the
per-example change against 0 (`paired_permutation_p`, seeded); p-values Holm-corrected over the
layers of the curve; a finding is a maximal run of contiguous layers with adjusted p < 0.05 and a
mean of one sign, reported with its average change, the largest adjusted p in the run and n. A flow
with no such layer is reported as changing nothing significantly, with its largest mean change.
Effective layers for pathways (`effective_ranges`): bins of layers (5 of 32, scaled to depth) whose
mean change is below −5%; optionally also Holm-significant.

A configuration that blocks no attention edge in an example (cross-frame on a 1-frame video, a
group the prompt lacks, an inverse window that covers every layer) is recorded as skipped with
its reason; it counts in no mean and no accuracy.

    >>> result = run_flow(model, examples, FlowOptions(presets=("vql-to-ql",)), out_dir="run")  # doctest: +SKIP
    >>> result.curve("Video↛Question").stats[2]                                                 # doctest: +SKIP
    >>> for finding in result.findings(): print(finding)                                        # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from tl_video.analyses.records import RecordSink, RecordedResult, RunHeader
from tl_video.analyses.scoring import (
    ScoredExample, StudyOptions, baseline_summary, not_finite_reason, not_finite_table, scored_examples,
)
from tl_video.analyses.statistics import Finding, MeanCI, mean_ci, paired_permutation_p
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.data.examples import VideoQAExample
from tl_video.interventions.knockout import KnockoutSpec, blocked_edges_by_layer
from tl_video.interventions.presets import PRESETS, preset
from tl_video.interventions.windows import WINDOW_STYLES, checked_layers, layer_numbers, window_layers
from tl_video.prompts.layout import TokenLayout

ANALYSIS = "flow"
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)
USER_PRESET = "custom"  # the preset name under which user flows are recorded
METRICS = {"true": "change_true", "answer": "change_answer"}
METRIC_NAMES = {"true": "the true option's probability", "answer": "the baseline answer's probability"}
PAPER_WINDOW_K, PAPER_N_LAYERS = 9, 32
ALPHA = 0.05
EFFECTIVE_THRESHOLD = -5.0  # percent: a binned mean change below this marks an effective layer
PAPER_BIN_SIZE = 5  # layers per bin at the paper's 32 layers; scaled with depth like the window


def default_window_k(n_layers: int) -> int:
    """The paper's window as a fraction of depth: max(1, round(9/32 · n)) (9 at 32 layers, 2 at 6)."""
    return max(1, round(PAPER_WINDOW_K * n_layers / PAPER_N_LAYERS))


def resolve_window_k(window_k: int | None, n_layers: int) -> tuple[int, list[str]]:
    """The window size a run uses and any note about it (a k above n_layers is clipped, with a warning)."""
    if window_k is None:
        return default_window_k(n_layers), []
    if window_k > n_layers:
        note = f"window k={window_k} is larger than the model's {n_layers} layers; clipped to k={n_layers}"
        warnings.warn(note, stacklevel=3)
        return n_layers, [note]
    return window_k, []


@dataclass(frozen=True)
class UserFlow:
    """A flow the user defines: blocking every (source keys -> target queries) edge of ``edges`` at once."""

    label: str
    edges: tuple[tuple[str, str], ...]

    def spec(self, layers: Sequence[int]) -> KnockoutSpec:
        return KnockoutSpec.of(self.edges, layers, label=self.label)


def _user_flows(specs: Any) -> tuple[UserFlow, ...]:
    """Normalise ``{label: [(source, target), ...]}`` (or a sequence of UserFlow) with one-line errors."""
    if isinstance(specs, Mapping):
        items = list(specs.items())
    elif isinstance(specs, (str, bytes)) or not isinstance(specs, Iterable):
        raise ValueError(f"FlowOptions.specs must map a label to a list of (source, target) selector pairs, got {specs!r:.80}")
    else:
        items = [(flow.label, flow.edges) if isinstance(flow, UserFlow) else flow for flow in specs]
    flows: list[UserFlow] = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"FlowOptions.specs: each entry must be (label, [(source, target), ...]), got {item!r:.80}")
        label, edges = item
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"FlowOptions.specs: a flow label must be a non-empty string, got {label!r}")
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
            raise ValueError(f"FlowOptions.specs[{label!r}]: edges must be a list of (source, target) pairs, got {edges!r:.80}")
        pairs = []
        for edge in edges:
            if isinstance(edge, (str, bytes)) or not isinstance(edge, Iterable) or len(tuple(edge)) != 2:
                raise ValueError(f"FlowOptions.specs[{label!r}]: each edge must be a (source, target) selector pair, got {edge!r}")
            source, target = tuple(edge)
            if not all(isinstance(s, str) and s.strip() for s in (source, target)):
                raise ValueError(f"FlowOptions.specs[{label!r}]: selectors must be non-empty strings, got {edge!r}")
            pairs.append((source, target))
        if not pairs:
            raise ValueError(f"FlowOptions.specs[{label!r}]: give at least one (source, target) edge")
        if any(flow.label == label for flow in flows):
            raise ValueError(f"FlowOptions.specs: the label {label!r} is used twice; labels name the curves")
        flows.append(UserFlow(label, tuple(pairs)))
    return tuple(flows)


@dataclass(frozen=True, kw_only=True)
class FlowOptions(StudyOptions):
    """What the information-flow sweep blocks, where, and on which examples."""

    presets: tuple[str, ...] = PRESET_NAMES  # paper presets to sweep (each gives one curve per flow)
    specs: Any = ()  # user flows: {label: [(source, target), ...]} selector pairs blocked together
    windows: tuple[str, ...] = ("center",)  # window styles: center, inverse, top_down, bottom_up
    window_k: int | None = None  # window size; None = the paper's fraction of depth (round(9/32 · n), >= 1)
    layers: tuple[int, ...] | None = None  # centre layers (0-indexed); None = every layer

    def __post_init__(self) -> None:
        super().__post_init__()
        presets = _names(self.presets, "presets")
        unknown = [name for name in presets if name not in PRESETS]
        if unknown:
            raise ValueError(f"FlowOptions.presets: unknown {unknown}; valid: {', '.join(PRESETS)}")
        windows = _names(self.windows, "windows")
        bad = [name for name in windows if name not in WINDOW_STYLES]
        if bad or not windows:
            raise ValueError(f"FlowOptions.windows: {bad or 'none given'}; valid: {', '.join(WINDOW_STYLES)}")
        flows = _user_flows(self.specs)
        if not presets and not flows:
            raise ValueError("FlowOptions: nothing to sweep; give presets=... or specs={label: [(source, target)]}")
        if self.window_k is not None:
            if isinstance(self.window_k, bool) or not isinstance(self.window_k, int) or self.window_k < 1:
                raise ValueError(f"FlowOptions.window_k must be a positive integer or None, got {self.window_k!r}")
        layers = None if self.layers is None else tuple(layer_numbers(self.layers, "FlowOptions.layers"))
        if layers is not None and any(layer < 0 for layer in layers):
            raise ValueError(f"FlowOptions.layers: layer numbers are 0-indexed and >= 0, got {list(layers)}")
        object.__setattr__(self, "presets", presets)
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "specs", flows)
        object.__setattr__(self, "layers", layers)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["presets"] = list(self.presets)
        data["windows"] = list(self.windows)
        data["specs"] = {flow.label: [list(edge) for edge in flow.edges] for flow in self.specs}
        data["layers"] = None if self.layers is None else list(self.layers)
        return data


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"FlowOptions.{what} must be a list of names, got {value!r}")
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class FlowConfig:
    """One configuration of one example: a flow blocked in one window."""

    preset: str
    label: str
    window: str
    center: int
    layers: tuple[int, ...]
    spec: KnockoutSpec

    def key(self, example_id: str, analysis: str = ANALYSIS) -> str:
        return f"{analysis}/{example_id}/{self.preset}/{self.label}/{self.window}/L{self.center}"

    def fields(self, example_id: str, task: str, k: int, analysis: str = ANALYSIS) -> dict[str, Any]:
        return {
            "kind": analysis, "example_id": example_id, "task": task, "preset": self.preset,
            "label": self.label, "window": self.window, "k": k, "center": self.center, "layers": list(self.layers),
            "spec": self.spec.to_json(),
        }


def flow_configs(options: FlowOptions, layout: TokenLayout, centres: list[int], n_layers: int, k: int) -> list[FlowConfig]:
    """Every configuration of one input, in a fixed order (window, centre, preset, flow)."""
    out = []
    for style in options.windows:
        for centre in centres:
            layers = window_layers(centre, n_layers, k, style)
            for name in options.presets:
                for spec in preset(name, layout, layers):
                    out.append(FlowConfig(name, spec.label, style, centre, layers, spec))
            for flow in options.specs:
                out.append(FlowConfig(USER_PRESET, flow.label, style, centre, layers, flow.spec(layers)))
    return out


def blocked_edge_count(spec: KnockoutSpec, layout: TokenLayout, n_layers: int) -> tuple[int | None, str | None]:
    """Causal (query >= key) edges the spec removes in this input, or the reason it cannot apply."""
    if not spec.blocks:
        return None, "has no edge in this input (e.g. cross-frame on a 1-frame video)"
    if not any(block.layers for block in spec.blocks):
        return None, "blocks no layer (an inverse window that covers the whole model)"
    try:
        blocked = blocked_edges_by_layer(spec, layout, n_layers)
    except ValueError as error:
        return None, str(error)
    causal = torch.ones(layout.n_tokens, layout.n_tokens, dtype=torch.bool).tril()
    counted: dict[int, int] = {}
    for matrix in blocked.values():
        if id(matrix) not in counted:
            counted[id(matrix)] = int((matrix & causal).sum())
    total = sum(counted[id(matrix)] for matrix in blocked.values())
    if total == 0:
        return None, "blocks no attention edge in this input (e.g. a 1-frame video has no cross-frame edge)"
    return total, None


def relative_change(new: float, base: float) -> float | None:
    """Percent change from `base`; None (JSON null, left out of every mean and test, and out of the
    cell's n) when the baseline probability is 0, e.g. underflowed in float32, where it is undefined."""
    return (new - base) / base * 100.0 if base > 0 else None


def knockout_record(
    scored: ScoredExample, probabilities: Float[torch.Tensor, "d_vocab"]
) -> dict[str, Any]:
    """The metrics of one knockout on one example: both relative changes (×100), the new argmax, accuracy."""
    a, t = scored.answer_token, scored.true_token
    p_answer, p_true = float(scored.probabilities[a]), float(scored.probabilities[t])
    p_answer_new, p_true_new = float(probabilities[a]), float(probabilities[t])
    new_token = int(probabilities.argmax())
    return {
        "answer_token": a, "true_token": t, "p_answer": p_answer, "p_answer_knockout": p_answer_new,
        "p_true": p_true, "p_true_knockout": p_true_new,
        "change_answer": relative_change(p_answer_new, p_answer), "change_true": relative_change(p_true_new, p_true),
        "new_token": new_token, "new_correct": scored.is_true(new_token),
    }


def run_flow(
    model: Any, examples: Sequence[VideoQAExample], options: FlowOptions = FlowOptions(), *,
    out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
) -> "FlowResult":
    """Sweep every configured flow over the centre layers for each selected example; records go to
    ``<out_dir>/flow.jsonl`` as they are produced (``resume=True`` skips what is there)."""
    if not isinstance(options, FlowOptions):
        raise ValueError(f"run_flow options must be FlowOptions, got {type(options).__name__}")
    if not examples:
        raise ValueError("run_flow: no examples to analyse")
    n_layers = model.cfg.n_layers
    k, centres, sink = open_sweep(model, options, ANALYSIS, out_dir, resume)
    bar = tqdm(total=len(examples), desc=ANALYSIS, unit="example", disable=not progress)
    try:
        for example in examples:
            for scored in scored_examples(model, [example], options, sink=sink, progress=False):
                configs = flow_configs(options, scored.prepared.layout, centres, n_layers, k)
                _sweep_example(model, scored, configs, sink, n_layers, k)
            bar.update(1)
    finally:
        bar.close()
    return FlowResult(sink.header, list(sink.records))


def open_sweep(
    model: Any, options: FlowOptions, analysis: str, out_dir: str | Path | None, resume: bool
) -> tuple[int, list[int], RecordSink]:
    """What every flow sweep starts with: the window k (clipped, with notes in the header), the centre
    layers, and the record sink of ``<out_dir>/<analysis>.jsonl``."""
    n_layers = model.cfg.n_layers
    k, notes = resolve_window_k(options.window_k, n_layers)
    centres = checked_layers(options.layers, n_layers, f"{type(options).__name__}.layers")
    header = RunHeader.for_model(
        model, analysis=analysis, dataset=options.dataset, options=options.to_json(), seed=options.seed,
        n_layers=n_layers, window_k=k, notes=notes,
    )
    path = None if out_dir is None else Path(out_dir) / f"{analysis}.jsonl"
    return k, centres, RecordSink.open(path, header, resume=resume)


def _sweep_example(model: Any, scored: ScoredExample, configs: list[FlowConfig], sink: RecordSink, n_layers: int, k: int) -> None:
    """Evaluate the configurations not yet on disk in one call, then write their records in order, in one write."""
    example_id = scored.example.example_id
    pending = [config for config in configs if not sink.has(config.key(example_id))]
    checks = [blocked_edge_count(config.spec, scored.prepared.layout, n_layers) for config in pending]
    runnable = [config.spec for config, (count, _) in zip(pending, checks) if count is not None]
    probabilities = iter(knockout_probabilities(model, scored.prepared, runnable)) if runnable else iter(())
    records = []
    for config, (count, reason) in zip(pending, checks):
        record = {"key": config.key(example_id)} | config.fields(example_id, scored.task, k)
        new = None if count is None else next(probabilities)
        not_finite = None if new is None else not_finite_reason("the knockout's probabilities", new)
        if not_finite is not None:  # e.g. an fp16 overflow: never averaged
            count, reason = None, not_finite
        if count is None:
            record |= {"skipped": True, "reason": reason}
        else:
            record |= {"skipped": False, "n_blocked_edges": count} | knockout_record(scored, new)
        records.append(record)
    sink.append_many(records)


# ----------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FlowCurve:
    """Per centre layer: every example's change (percent) and its mean with a 95% bootstrap interval."""

    preset: str
    label: str
    window: str
    metric: str  # "true" or "answer"
    task: str | None  # None = pooled over tasks
    layers: tuple[int, ...]
    values: tuple[dict[str, float], ...]  # per layer: example_id -> change
    stats: tuple[MeanCI, ...]

    def mean(self) -> Float[np.ndarray, "layer"]:
        return np.array([s.mean for s in self.stats])

    @property
    def n(self) -> int:
        """Examples behind the curve (the largest count over layers)."""
        return max((s.n for s in self.stats), default=0)

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "label": self.label, "window": self.window, "metric": self.metric,
                "task": self.task, "layers": list(self.layers), "stats": [s.to_json() for s in self.stats]}


@dataclass(frozen=True)
class AccuracyCurve:
    """Accuracy under knockout per centre layer, with its denominator, and the baseline of the same examples."""

    preset: str
    label: str
    window: str
    task: str | None
    layers: tuple[int, ...]
    n_correct: tuple[int, ...]
    n: tuple[int, ...]  # examples evaluated at each layer (selected, not skipped)
    baseline_correct: int  # of the selected examples, answered correctly without knockout
    n_selected: int

    @property
    def accuracy(self) -> Float[np.ndarray, "layer"]:
        return np.array([c / n if n else float("nan") for c, n in zip(self.n_correct, self.n)])

    @property
    def baseline_accuracy(self) -> float:
        return self.baseline_correct / self.n_selected if self.n_selected else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "label": self.label, "window": self.window, "task": self.task,
                "layers": list(self.layers), "n_correct": list(self.n_correct), "n": list(self.n),
                "baseline_correct": self.baseline_correct, "n_selected": self.n_selected}


@dataclass(frozen=True)
class FlowResult(RecordedResult):
    """The records of one information-flow run, and their summaries (curves, accuracy, findings)."""

    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # what the records are called and measure (the open-ended variant reuses these summaries)
    ANALYSIS: ClassVar[str] = ANALYSIS
    METRICS: ClassVar[dict[str, str]] = METRICS  # metric name -> record field (percent change)
    METRIC_NAMES: ClassVar[dict[str, str]] = METRIC_NAMES
    DEFAULT_METRIC: ClassVar[str] = "true"
    CORRECT_FIELD: ClassVar[str] = "new_correct"  # record field counted by `accuracy`
    ACCURACY_NAME: ClassVar[str] = "accuracy under knockout"


    # --- what the run holds
    @property
    def n_layers(self) -> int:
        return int(self.header.extra["n_layers"])

    @property
    def window_k(self) -> int:
        return int(self.header.extra["window_k"])

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The report's tables: the configurations whose probabilities were not finite, with the reason
        (none: no table)."""
        return not_finite_table(self.records)

    @property
    def notes(self) -> list[str]:
        """Notes about the run, e.g. a window that was clipped to the model's depth."""
        return list(self.header.extra.get("notes", []))

    def _flow_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == self.ANALYSIS]

    def evaluated(self) -> list[dict[str, Any]]:
        return [r for r in self._flow_records() if not r["skipped"]]

    def evaluated_for(self, preset: str, window: str) -> bool:
        """Whether any configuration of ``preset`` in ``window`` was evaluated (not all skipped)."""
        return any(r["preset"] == preset and r["window"] == window for r in self.evaluated())

    def skipped(self) -> list[dict[str, Any]]:
        """Configurations that blocked nothing in their example, each with its reason."""
        return [r for r in self._flow_records() if r["skipped"]]

    def baseline(self) -> dict[str, int]:
        """n_examples, n_correct (at baseline) and n_selected (analysed)."""
        return baseline_summary(self.records)

    def presets(self) -> list[str]:
        return list(dict.fromkeys(r["preset"] for r in self._flow_records()))

    def labels(self, preset: str | None = None) -> list[str]:
        return list(dict.fromkeys(r["label"] for r in self._flow_records() if preset in (None, r["preset"])))

    def windows(self) -> list[str]:
        return list(dict.fromkeys(r["window"] for r in self._flow_records()))

    def tasks(self) -> list[str]:
        return sorted({r["task"] for r in self.records if r.get("kind") == "baseline" and r["selected"]})

    def centres(self) -> list[int]:
        return sorted({r["center"] for r in self._flow_records()})

    def _select(self, label: str, preset: str | None, window: str, task: str | None) -> tuple[str, list[dict[str, Any]]]:
        rows = [r for r in self.evaluated() if r["label"] == label and r["window"] == window
                and preset in (None, r["preset"]) and task in (None, r["task"])]
        presets = list(dict.fromkeys(r["preset"] for r in rows))
        if len(presets) > 1:
            raise ValueError(f"flow {label!r} appears in presets {presets}; pass preset= to choose one")
        if not rows and label not in self.labels():
            raise ValueError(f"no flow {label!r} in this run; flows: {', '.join(self.labels())}")
        return (presets[0] if presets else (preset or "")), rows

    # --- curves
    def curve(self, label: str, *, window: str = "center", metric: str | None = None, task: str | None = None,
              preset: str | None = None) -> FlowCurve:
        """Mean change (percent) of the true option's (or baseline answer's) probability per centre layer."""
        metric = metric or self.DEFAULT_METRIC
        if metric not in self.METRICS:
            raise ValueError(f"metric={metric!r}; valid: {', '.join(self.METRICS)}")
        cache_key = ("curve", label, window, metric, task, preset)
        if cache_key not in self._cache:
            preset_name, rows = self._select(label, preset, window, task)
            layers = tuple(self.centres())
            values = tuple({r["example_id"]: r[self.METRICS[metric]] for r in rows if r["center"] == layer} for layer in layers)
            stats = tuple(mean_ci(list(v.values()), seed=self.header.seed) for v in values)
            self._cache[cache_key] = FlowCurve(preset_name, label, window, metric, task, layers, values, stats)
        return self._cache[cache_key]

    def curves(self, preset: str, *, window: str = "center", metric: str | None = None, task: str | None = None) -> dict[str, FlowCurve]:
        """One curve per flow of ``preset`` ("custom" for user flows), in the preset's order."""
        if preset not in self.presets():
            raise ValueError(f"no flow records of preset {preset!r}; this result has {self.presets()} (user flows are 'custom')")
        if window not in self.windows():
            raise ValueError(f"no flow records of window style {window!r}; this result has {self.windows()}")
        return {label: self.curve(label, window=window, metric=metric, task=task, preset=preset) for label in self.labels(preset)}

    def accuracy(self, label: str, *, window: str = "center", task: str | None = None, preset: str | None = None) -> AccuracyCurve:
        """Accuracy under knockout per centre layer (new argmax = true letter), denominators stated."""
        preset_name, rows = self._select(label, preset, window, task)
        layers = tuple(self.centres())
        n_correct = tuple(sum(bool(r[self.CORRECT_FIELD]) for r in rows if r["center"] == layer) for layer in layers)
        n = tuple(sum(1 for r in rows if r["center"] == layer) for layer in layers)
        selected = [r for r in self.records if r.get("kind") == "baseline" and r["selected"] and task in (None, r["task"])]
        return AccuracyCurve(preset_name, label, window, task, layers, n_correct, n,
                             sum(bool(r["correct"]) for r in selected), len(selected))

    # --- findings
    def layer_tests(self, label: str, *, window: str = "center", metric: str | None = None, task: str | None = None,
                    preset: str | None = None) -> tuple[list[float], list[float]]:
        """Per centre layer: raw and Holm-adjusted p-values of the sign-flip test of the change vs 0."""
        curve = self.curve(label, window=window, metric=metric, task=task, preset=preset)
        raw = [paired_permutation_p(list(v.values()), 0.0, seed=self.header.seed) for v in curve.values]
        return raw, holm(raw)

    def findings(self, *, window: str = "center", metric: str | None = None, task: str | None = None) -> list[Finding]:
        """For each flow: the contiguous centre-layer ranges where blocking it changes ``metric`` significantly
        (sign-flip permutation test vs 0 per layer, p < 0.05 after Holm correction over layers), with the
        mean change; or a sentence that blocking it changes nothing significant."""
        if window not in self.windows():
            return []
        metric = metric or self.DEFAULT_METRIC
        out = []
        for preset_name in self.presets():
            for label in self.labels(preset_name):
                out.extend(self._flow_findings(label, preset_name, window, metric, task))
        return out

    def _flow_findings(self, label: str, preset: str, window: str, metric: str, task: str | None) -> list[Finding]:
        curve = self.curve(label, window=window, metric=metric, task=task, preset=preset)
        if curve.n == 0:
            return []
        _, adjusted = self.layer_tests(label, window=window, metric=metric, task=task, preset=preset)
        means = curve.mean()
        n_tests = int(sum(np.isfinite(p) for p in adjusted))
        test = (f"paired sign-flip permutation test of the per-example change vs 0 at each centre layer, "
                f"Holm-corrected over {n_tests} layers; a range = contiguous layers with adjusted p < {ALPHA}")
        where = "" if task is None else f" on {task}"
        findings = []
        for sign, verb in ((-1, "lowers"), (1, "raises")):
            significant = [layer for layer, p, m in zip(curve.layers, adjusted, means)
                           if np.isfinite(p) and p < ALPHA and np.sign(m) == sign]
            for run in contiguous_runs(significant):
                index = [curve.layers.index(layer) for layer in run]
                size = float(np.mean([means[i] for i in index]))
                p_max = float(max(adjusted[i] for i in index))
                n = min(curve.stats[i].n for i in index)
                sentence = (
                    f"Blocking {_blocked_phrase(label)} {self._where(run, window)}{where} {verb} {self.METRIC_NAMES[metric]} by "
                    f"{abs(size):.0f}% on average (p ≤ {p_max:.3g} at each layer, Holm-corrected; n = {n})."
                )
                findings.append(Finding(sentence, test, p_max, n))
        if not findings:
            finite = [i for i, m in enumerate(means) if np.isfinite(m)]
            largest = max(finite, key=lambda i: abs(means[i]))
            p_min = float(np.nanmin(adjusted)) if np.isfinite(adjusted).any() else None
            sentence = (
                f"Blocking {_blocked_phrase(label)} ({self._window_words(window)}){where} changes {self.METRIC_NAMES[metric]} significantly at "
                f"no centre layer (largest mean change {means[largest]:+.1f}% at L{curve.layers[largest] + 1}; "
                f"no layer is significant after Holm correction, n = {curve.n})."
            )
            findings.append(Finding(sentence, test, p_min, curve.n))
        return findings

    def _window_words(self, window: str) -> str:
        k = self.window_k
        return {"center": f"window of k = {k} layer{'s' if k > 1 else ''}", "inverse": f"every layer outside a k = {k} window",
                "top_down": "from the centre layer to the last", "bottom_up": "from the first layer to the centre layer"}[window]

    def _where(self, run: list[int], window: str) -> str:
        span = layer_span(run)
        if window == "center":
            return f"in L{span}" if self.window_k == 1 else f"in a {self.window_k}-layer window centred on L{span}"
        if window == "inverse":
            return f"everywhere except a {self.window_k}-layer window centred on L{span}"
        if window == "top_down":
            return f"from L{span} (centre) to the last layer"
        return f"from the first layer to L{span} (centre)"


def _blocked_phrase(label: str) -> str:
    """What "Blocking ..." reads with: "No cross-frame interactions" -> "cross-frame interactions"."""
    return label[3:] if label.startswith("No ") else label


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN entries are not tests and stay NaN)."""
    p = np.asarray(p_values, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(p.shape, np.nan)
    if finite.size == 0:
        return adjusted.tolist()
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def contiguous_runs(layers: Iterable[int]) -> list[list[int]]:
    """[1, 2, 3, 6] -> [[1, 2, 3], [6]]."""
    runs: list[list[int]] = []
    for layer in sorted(set(layers)):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return runs


def layer_span(run: Sequence[int]) -> str:
    """0-indexed layers -> "2–4" in 1-indexed prose (one layer: "3")."""
    return f"{run[0] + 1}" if len(run) == 1 else f"{run[0] + 1}–L{run[-1] + 1}"


def default_bin_size(n_layers: int) -> int:
    """Layers per bin for `effective_ranges`: the paper's 5 of 32, scaled with depth (>= 1)."""
    return max(1, round(PAPER_BIN_SIZE * n_layers / PAPER_N_LAYERS))


def effective_ranges(
    flow_result: FlowResult, *, threshold: float = EFFECTIVE_THRESHOLD, window: str = "center", metric: str | None = None,
    bin_size: int | None = None, preset: str | None = None, task: str | None = None, alpha: float | None = None,
) -> dict[str, list[int]]:
    """Per flow label, the effective layers (0-indexed, sorted): centre layers grouped in consecutive bins of
    ``bin_size`` (default: 5 of 32 layers scaled to the model, so 1 on 6 layers), a bin being effective when
    the mean of its layers' mean changes is below ``threshold`` percent (−5 by default).

    ``alpha`` (optional, stricter than the paper's rule): keep only layers whose change is also significantly
    negative (Holm-adjusted sign-flip p < alpha, as in `FlowResult.findings`).
    """
    if window not in flow_result.windows():
        raise ValueError(f"window {window!r} was not swept in this run; swept: {', '.join(flow_result.windows())}")
    size = default_bin_size(flow_result.n_layers) if bin_size is None else bin_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"effective_ranges bin_size must be a positive integer, got {bin_size!r}")
    if alpha is not None and not 0 < alpha < 1:
        raise ValueError(f"effective_ranges alpha must lie in (0, 1) or be None, got {alpha!r}")
    out = {}
    for label in flow_result.labels(preset):
        curve = flow_result.curve(label, window=window, metric=metric, task=task, preset=preset)
        means = dict(zip(curve.layers, curve.mean()))
        effective = []
        for start in range(0, flow_result.n_layers, size):
            members = [layer for layer in range(start, start + size) if layer in means and np.isfinite(means[layer])]
            if members and float(np.mean([means[layer] for layer in members])) < threshold:
                effective.extend(members)
        if alpha is not None:
            _, adjusted = flow_result.layer_tests(label, window=window, metric=metric, task=task, preset=preset)
            significant = {layer for layer, p in zip(curve.layers, adjusted) if np.isfinite(p) and p < alpha}
            effective = [layer for layer in effective if layer in significant and means[layer] < 0]
        out[label] = effective
    return out
