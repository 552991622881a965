"""Attention maps: the question's attention to the video per layer, baseline vs under a knockout (docs/methods.md).

For every analysed example, two forward passes (baseline and under the knockout) record the
attention (head mean, or max) of the query group (``question`` by default) to every video
token in every layer:

- per group: the mean over the group's query tokens (one map per layer);
- per query token: one map per query token, as the reference draws them (recorded for the first
  ``token_map_examples`` analysed examples, to keep record files small on real models);
- the video mass: the share of each query token's attention that lands on the video, averaged
  over the group's tokens -- the per-layer summary, with a bootstrap CI over examples.

Default knockout: no cross-frame interactions (the cross-frame preset) in the first k layers,
k = the paper's window of 9 of 32 layers kept as a fraction of depth (round(9 n / 32), at least 1:
L1–L9 on 32 layers, L1–L2 on the 6-layer built-in model) -- the early layers where the paper finds
cross-frame interactions matter. ``knockout`` takes any knockout spec (JSON of `KnockoutSpec`)
instead.

Records (``attention.jsonl``): ``baseline/<id>`` per example, ``attention/<condition>/<id>``
per analysed example and condition ("baseline", "knockout"). Maps that are not finite in some layer
(an fp16 overflow) are recorded as skipped with the reason naming the layers (``skipped: True``);
they count in no number, and a change under the knockout pairs only examples with both conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from tl_video.analyses.records import RecordSink, RecordedResult, RunHeader
from tl_video.analyses.scoring import (
    ScoredExample, StudyOptions, baseline_summary, not_finite_reason, not_finite_table, scored_examples,
)
from tl_video.analyses.statistics import Finding, MeanCI, mean_ci, paired_permutation_p
from tl_video.data.examples import VideoQAExample
from tl_video.interventions.attention_maps import query_attention_to_video
from tl_video.interventions.knockout import KnockoutSpec
from tl_video.interventions.presets import cross_frame
from tl_video.interventions.windows import layer_numbers

ANALYSIS = "attention"
CONDITIONS = ("baseline", "knockout")
TOKEN_FIELDS = ("query_tokens", "token_maps", "token_video_mass")  # the per-query-token part of a record
PAPER_WINDOW, PAPER_DEPTH = 9, 32


def default_knockout_layers(n_layers: int) -> tuple[int, ...]:
    """The first round(9 n / 32) layers (at least one): the paper's window as a fraction of depth."""
    return tuple(range(max(1, min(n_layers, round(PAPER_WINDOW * n_layers / PAPER_DEPTH)))))


def layer_range_label(layers: Sequence[int]) -> str:
    """1-indexed label of a set of layers: "L1–L2", "L4", or a list when not contiguous."""
    layers = sorted(layers)
    if not layers:
        return "no layer"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"L{layers[0] + 1}" if len(layers) == 1 else f"L{layers[0] + 1}–L{layers[-1] + 1}"
    return ", ".join(f"L{layer + 1}" for layer in layers)


@dataclass(frozen=True, kw_only=True)
class AttentionOptions(StudyOptions):
    """Options of the attention-map pipeline (see the module docstring)."""

    query: str = "question"  # the query group (a layout selector)
    heads: str = "mean"  # "mean" or "max" over heads
    layers: tuple[int, ...] | None = None  # layers whose maps are recorded; None = every layer
    knockout: dict[str, Any] | None = None  # a KnockoutSpec as JSON; None = the cross-frame preset below
    knockout_layers: tuple[int, ...] | None = None  # layers of the default cross-frame knockout; None = the paper's window
    token_map_examples: int = 1  # per-query-token maps for the first N analysed examples with both maps finite (0 = none)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.query, str) or not self.query.strip():
            raise ValueError(f"AttentionOptions.query must be a layout selector such as 'question', got {self.query!r}")
        if self.heads not in ("mean", "max"):
            raise ValueError(f"AttentionOptions.heads={self.heads!r}; valid: mean, max")
        for name in ("layers", "knockout_layers"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, layer_numbers(getattr(self, name), f"AttentionOptions.{name}"))
        if self.knockout is not None:
            if isinstance(self.knockout, KnockoutSpec):
                object.__setattr__(self, "knockout", self.knockout.to_json())
            KnockoutSpec.from_json(self.knockout)  # validates, one line per problem
            if self.knockout_layers is not None:
                raise ValueError("AttentionOptions: give either knockout (a spec) or knockout_layers (for the default cross-frame knockout), not both")
        n = self.token_map_examples
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"AttentionOptions.token_map_examples must be an integer >= 0, got {n!r}")


def run_attention(
    model: Any, examples: Sequence[VideoQAExample], options: AttentionOptions = AttentionOptions(), *,
    out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
) -> "AttentionResult":
    """Record baseline and knockout attention maps for the selected examples; records as produced."""
    if options.knockout is None and options.knockout_layers is None:
        from dataclasses import replace

        options = replace(options, knockout_layers=default_knockout_layers(model.cfg.n_layers))
    header = RunHeader.for_model(model, analysis=ANALYSIS, dataset=options.dataset, options=options.to_json(), seed=options.seed)
    sink = RecordSink.open(None if out_dir is None else Path(out_dir) / f"{ANALYSIS}.jsonl", header, resume=resume)
    with_token_maps = 0  # examples whose records hold per-token maps so far
    for scored in scored_examples(model, examples, options, sink=sink, progress=progress, desc="attention maps"):
        keys = {condition: f"attention/{condition}/{scored.example.example_id}" for condition in CONDITIONS}
        done = [sink.get(key) for key in keys.values() if sink.has(key)]
        if len(done) < len(keys):
            spec = knockout_spec(options, scored)
            with_tokens = with_token_maps < options.token_map_examples
            new = [{"key": key} | attention_record(model, scored, options, condition, spec, with_tokens)
                   for condition, key in keys.items() if not sink.has(key)]
            if any(r.get("skipped") for r in done + new):  # per-token maps are shown in pairs: both conditions or none
                new = [r if r.get("skipped") else r | dict.fromkeys(TOKEN_FIELDS) for r in new]
            sink.append_many(new)  # an example's conditions go to disk together
            done += new
        with_token_maps += any(r.get("token_maps") is not None for r in done)
    return AttentionResult(header=sink.header, records=list(sink.records))


def knockout_spec(options: AttentionOptions, scored: ScoredExample) -> KnockoutSpec:
    """The knockout of the run for one example (the cross-frame preset depends on its frames)."""
    if options.knockout is not None:
        return KnockoutSpec.from_json(options.knockout)
    (spec,) = cross_frame(scored.prepared.layout, options.knockout_layers)
    return KnockoutSpec(blocks=spec.blocks, label=f"{spec.label} in {layer_range_label(options.knockout_layers)}")


def attention_record(
    model: Any, scored: ScoredExample, options: AttentionOptions, condition: str, spec: KnockoutSpec, with_tokens: bool
) -> dict[str, Any]:
    """One example under one condition: group maps, video mass and (optionally) per-token maps per layer."""
    attention = query_attention_to_video(
        model, scored.prepared, options.query, None if options.layers is None else list(options.layers),
        heads=options.heads, knockout=spec if condition == "knockout" else None,
    )
    layout = scored.prepared.layout
    identity = {
        "kind": "attention", "condition": condition, "example_id": scored.example.example_id, "task": scored.task,
        "spec": spec.to_json() if condition == "knockout" else None, "label": spec.label if condition == "knockout" else "baseline",
    }
    layers = [f"L{layer + 1}" for layer in attention.layers]
    # per-token maps and video mass are means of the same softmax rows as the group map: a NaN in them is in it too
    reason = not_finite_reason("the attention maps", attention.group, layers)
    if reason is not None:
        return identity | {"skipped": True, "reason": reason}
    record = identity | {
        "skipped": False, "query": options.query, "heads": options.heads, "layers": list(attention.layers),
        "video_grid": [list(cell) for cell in layout.video_grid], "frame_unit": layout.frame_unit,
        "group_map": attention.group.tolist(), "video_mass": attention.video_mass.mean(-1).tolist(),
        **dict.fromkeys(TOKEN_FIELDS),
    }
    if with_tokens:
        tokens = scored.prepared.tokens[0, list(attention.query_positions)].tolist()
        record |= {
            "query_tokens": [model.tokenizer.decode([token]) for token in tokens],
            "token_maps": attention.per_token.tolist(), "token_video_mass": attention.video_mass.tolist(),
        }
    return record


@dataclass(frozen=True)
class AttentionResult(RecordedResult):
    """The records of one attention-map run and what the report reads from them."""

    ANALYSIS: ClassVar[str] = ANALYSIS

    @property
    def options(self) -> AttentionOptions:
        data = dict(self.header.options)
        for name in ("layers", "knockout_layers"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return AttentionOptions(**data)

    def baseline(self) -> dict[str, int]:
        return baseline_summary(self.records)

    def attention_records(self, condition: str, task: str | None = None) -> list[dict]:
        if condition not in CONDITIONS:
            raise ValueError(f"condition {condition!r}; valid: {', '.join(CONDITIONS)}")
        return [
            r for r in self.records
            if r.get("kind") == "attention" and r["condition"] == condition and not r.get("skipped")
            and (task is None or r["task"] == task)
        ]

    def skipped(self) -> list[dict]:
        """Maps that could not be recorded (not finite), each with its reason."""
        return [r for r in self.records if r.get("kind") == "attention" and r.get("skipped")]

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The report's tables: the maps that were not finite, with the reason (none: no table)."""
        return not_finite_table(self.records)

    @property
    def tasks(self) -> list[str]:
        return sorted({r["task"] for r in self.attention_records("baseline")})

    @property
    def layers(self) -> list[int]:
        records = self.attention_records("baseline") or self.attention_records("knockout")
        return records[0]["layers"] if records else []

    @property
    def knockout_label(self) -> str:
        records = self.attention_records("knockout")
        return records[0]["label"] if records else ""

    def video_mass_values(self, condition: str, task: str | None = None, *, paired: bool = False) -> np.ndarray:
        """[example, layer]: the share of the query group's attention on the video (``paired``: only the examples
        with maps under both conditions, in the same order for each condition)."""
        records = self.attention_records(condition, task)
        if paired:
            both = set.intersection(*({r["example_id"] for r in self.attention_records(c, task)} for c in CONDITIONS))
            records = [r for r in records if r["example_id"] in both]
        return np.asarray([r["video_mass"] for r in records], dtype=float).reshape(-1, len(self.layers))

    def video_mass(self, condition: str = "baseline", task: str | None = None) -> list[MeanCI]:
        """Per recorded layer: mean share of the query's attention on the video, with its 95% CI over examples."""
        values = self.video_mass_values(condition, task)
        return [mean_ci(values[:, i], seed=self.header.seed) for i in range(values.shape[1])]

    def video_mass_change(self, task: str | None = None) -> list[tuple[MeanCI, float]]:
        """Per recorded layer: knockout minus baseline video mass (mean, CI) and its paired permutation p-value."""
        base, knocked = (self.video_mass_values(c, task, paired=True) for c in CONDITIONS)
        seed = self.header.seed
        return [
            (mean_ci(knocked[:, i] - base[:, i], seed=seed), paired_permutation_p(knocked[:, i], base[:, i], seed=seed))
            for i in range(base.shape[1])
        ]

    def mean_group_map(self, condition: str) -> np.ndarray:
        """[layer, video_token]: the group map averaged over examples (all share one video grid)."""
        records = self.attention_records(condition)
        grids = {tuple(map(tuple, r["video_grid"])) for r in records}
        if len(grids) > 1:
            raise ValueError("examples have different video grids; draw one example's map (example_id=)")
        if not records:  # every map of this condition was skipped (not finite): an empty (NaN) map
            other = self.attention_records("baseline") or self.attention_records("knockout")
            return np.full((len(self.layers), len(other[0]["video_grid"]) if other else 0), np.nan)
        return np.asarray([r["group_map"] for r in records], dtype=float).mean(0)

    def token_records(self, example_id: str | None = None) -> dict[str, dict]:
        """{condition: record} of an example with per-token maps (the first one recorded by default)."""
        with_tokens = [r for r in self.attention_records("baseline") if r["token_maps"] is not None]
        if example_id is not None:
            with_tokens = [r for r in with_tokens if r["example_id"] == example_id]
        if not with_tokens:
            raise ValueError(f"no per-query-token maps recorded{'' if example_id is None else f' for {example_id!r}'}; "
                             "raise AttentionOptions.token_map_examples")
        knocked = {r["example_id"] for r in self.attention_records("knockout")}
        paired = [r for r in with_tokens if r["example_id"] in knocked]
        if not paired:
            first = with_tokens[0]["example_id"]
            lost = next((r["reason"] for r in self.skipped() if r["example_id"] == first), "they were not recorded")
            raise ValueError(f"the knockout maps of {first!r} are missing: {lost}; no other example has per-query-token "
                             "maps under both conditions (raise AttentionOptions.token_map_examples)")
        chosen = paired[0]["example_id"]
        return {c: next(r for r in self.attention_records(c) if r["example_id"] == chosen) for c in CONDITIONS}

    def findings(self) -> list[Finding]:
        """Where the query attends to the video most, and the largest change under the knockout."""
        base = self.video_mass_values("baseline")
        if base.shape[0] == 0:
            return []
        layers, n = self.layers, base.shape[0]
        query = self.header.options["query"]
        means = base.mean(0)
        peak = int(np.argmax(means))
        out = [Finding(
            f"The {query}'s attention on the video peaks in L{layers[peak] + 1} ({means[peak]:.1%} of its attention, "
            f"head mean) and is {means[-1]:.1%} in L{layers[-1] + 1}.", "descriptive (mean over examples)", None, n,
        )]
        changes = self.video_mass_change()
        if not any(change.n for change, _ in changes):  # no example has maps under both conditions
            return out
        i = int(np.argmax([abs(change.mean) for change, _ in changes]))
        change, p = changes[i]
        base, knocked = (self.video_mass_values(c, paired=True).mean(0) for c in CONDITIONS)
        out.append(Finding(
            f"Under the knockout “{self.knockout_label}”, the {query}'s attention on the video in L{layers[i] + 1} goes from "
            f"{base[i]:.1%} to {knocked[i]:.1%} ({change.mean * 100:+.1f} points [{change.low * 100:+.1f}, "
            f"{change.high * 100:+.1f}]), the largest change of any layer.",
            "paired sign-flip permutation test, knockout vs baseline", p, change.n,
        ))
        return out
