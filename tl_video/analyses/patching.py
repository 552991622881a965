"""Activation patching, clean vs corrupted video, by layer x frame (docs/methods.md).

For every analysed example and every corruption (reverse, shuffle, freeze, or any corruption
spec of `tl_video.video.corruption_specs`), the video is corrupted frame-wise, the clean
activation (``resid_pre`` by default) of one frame's video tokens at one layer is patched into
the corrupted run, and the answer is read at the last position. Patching goes through
`tl_video.interventions.patch_frames` (TransformerLens's own patching driver), all frames of a
layer in one batched pass.

Metric: the logit difference between the clean answer letter (the example's correct option)
and the corrupted answer letter at the last position. The corrupted letter is the answer the
dataset gives for the corrupted video where it gives one (the reversed answer,
``metadata["reversed_answer_index"]``, for ``reverse``), otherwise the option letter the model
ranks first on the corrupted video. Each patched value is reported as normalised recovery,
(patched - corrupted) / (clean - corrupted): 0 = the corrupted run, 1 = the clean run, with the
clean and corrupted metric values alongside. Recovery is undefined where the corruption barely
moves the metric (reversing an object-count video; a corrupted answer equal to the clean one):
examples whose |clean - corrupted| is below ``min_gap`` (logits), or is 0, are excluded, not patched,
and counted. An example whose corrupted, clean or patched runs give logits that are not finite (an
fp16 overflow) is recorded as skipped with the reason (``skipped: True``) and counts in no number.

Records (``patching.jsonl``): ``baseline/<id>`` per example, ``patching/<corruption>/<id>`` per
analysed example and corruption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from tl_video.analyses.records import RecordSink, RecordedResult, RunHeader
from tl_video.analyses.scoring import (
    ScoredExample, StudyOptions, baseline_summary, not_finite_reason, not_finite_table, prepare_for_study,
    scored_examples,
)
from tl_video.analyses.statistics import Finding, MeanCI, mean_ci, paired_permutation_p
from tl_video.data.examples import VideoQAExample
from tl_video.interventions.patching import POSITIONAL_ACTIVATIONS, patch_frames
from tl_video.interventions.windows import layer_numbers
from tl_video.video.corruption_specs import CorruptionSpec, corruption_from_json

ANALYSIS = "patching"
DEFAULT_CORRUPTIONS = ({"name": "reverse"}, {"name": "shuffle", "seed": 0}, {"name": "freeze", "index": 0})
NEGLIGIBLE_RECOVERY = 0.05  # findings: mean recoveries smaller than this (in size) count as none
DATASET_ANSWER_FIELDS = {"reverse": "reversed_answer_index"}  # corruption -> example metadata field of its answer


def corruption_label(spec: dict[str, Any]) -> str:
    """A short stable name of a corruption spec: "reverse", "shuffle(seed=0)", "freeze(index=0)"."""
    arguments = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({arguments})" if arguments else spec["name"]


@dataclass(frozen=True, kw_only=True)
class PatchingOptions(StudyOptions):
    """Options of the activation-patching pipeline (see the module docstring)."""

    corruptions: tuple[Any, ...] = DEFAULT_CORRUPTIONS  # corruption specs (objects or their JSON)
    activation: str = "resid_pre"  # the activation patched per frame
    layers: tuple[int, ...] | None = None  # layers patched; None = every layer
    min_gap: float = 1.0  # examples with |clean - corrupted| logit difference below this are excluded

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.corruptions, (str, dict, CorruptionSpec)) or not self.corruptions:
            raise ValueError(f"PatchingOptions.corruptions must be a non-empty list of corruption specs, got {self.corruptions!r}")
        specs = []
        for item in self.corruptions:
            spec = item if isinstance(item, CorruptionSpec) else corruption_from_json(item)
            specs.append(spec.to_json())
        labels = [corruption_label(s) for s in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"PatchingOptions.corruptions lists the same corruption twice: {labels}")
        object.__setattr__(self, "corruptions", tuple(specs))
        if self.activation not in POSITIONAL_ACTIVATIONS:
            raise ValueError(f"PatchingOptions.activation={self.activation!r}; valid: {', '.join(POSITIONAL_ACTIVATIONS)}")
        if self.layers is not None:
            object.__setattr__(self, "layers", layer_numbers(self.layers, "PatchingOptions.layers"))
        if isinstance(self.min_gap, bool) or not isinstance(self.min_gap, (int, float)) or not self.min_gap >= 0:
            raise ValueError(f"PatchingOptions.min_gap must be a number >= 0 (logits), got {self.min_gap!r}")


def run_patching(
    model: Any, examples: Sequence[VideoQAExample], options: PatchingOptions = PatchingOptions(), *,
    out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
) -> "PatchingResult":
    """Patch clean frames into corrupted runs for every selected example and corruption; records as produced."""
    header = RunHeader.for_model(model, analysis=ANALYSIS, dataset=options.dataset, options=options.to_json(), seed=options.seed)
    sink = RecordSink.open(None if out_dir is None else Path(out_dir) / f"{ANALYSIS}.jsonl", header, resume=resume)
    for scored in scored_examples(model, examples, options, sink=sink, progress=progress, desc="patching"):
        for spec in options.corruptions:
            key = f"patching/{corruption_label(spec)}/{scored.example.example_id}"
            if not sink.has(key):
                sink.append({"key": key} | patching_record(model, scored, spec, options))
    return PatchingResult(header=sink.header, records=list(sink.records))


@torch.no_grad()
def patching_record(model: Any, scored: ScoredExample, spec: dict[str, Any], options: PatchingOptions) -> dict[str, Any]:
    """One example under one corruption: letters, clean/corrupted metric, and the [layer][frame] patch table."""
    clean = scored.prepared
    corrupted = prepare_for_study(
        model, scored.example, options, video=corruption_from_json(spec)(clean.frames), timing=clean.timing
    )
    clean.check_same_as(corrupted)
    identity = {"kind": "patching", "example_id": scored.example.example_id, "task": scored.task,
                "corruption": spec, "corruption_label": corruption_label(spec), "activation": options.activation}
    corrupted_logits = model(corrupted.tokens)[0, -1]
    clean_logits = model(clean.tokens)[0, -1]
    reason = not_finite_reason("the corrupted run's logits", corrupted_logits)  # the clean run's were checked when scored
    if reason is not None:
        return identity | {"skipped": True, "reason": reason}
    clean_letter = scored.true_letter
    corrupted_letter, source = _corrupted_letter(scored, spec, corrupted_logits)
    clean_token, corrupted_token = scored.letters[clean_letter], scored.letters[corrupted_letter]

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, clean_token] - logits[:, -1, corrupted_token]

    clean_value = float(clean_logits[clean_token] - clean_logits[corrupted_token])
    corrupted_value = float(corrupted_logits[clean_token] - corrupted_logits[corrupted_token])
    gap = clean_value - corrupted_value
    record = identity | {
        "skipped": False, "clean_letter": clean_letter, "corrupted_letter": corrupted_letter, "corrupted_letter_source": source,
        "clean_metric": clean_value, "corrupted_metric": corrupted_value, "gap": gap,
        "excluded": abs(gap) < options.min_gap or gap == 0, "layers": None, "patched": None, "recovery": None,
    }
    if record["excluded"]:
        return record
    layers = list(range(model.cfg.n_layers)) if options.layers is None else list(options.layers)
    names = {f"blocks.{layer}.hook_{options.activation}" for layer in layers} if options.activation == "resid_pre" else None
    _, clean_cache = model.run_with_cache(clean.tokens, names_filter=None if names is None else (lambda name: name in names))
    with model.last_position_logits():  # the metric reads the last position: no [frames, pos, d_vocab] logits
        table = patch_frames(  # one pass per layer, a batch row per frame
            model, clean, corrupted, clean_cache, metric, activation=options.activation, layers=layers, progress=False,
            batched=True,
        )
    patched = table.float().cpu()
    reason = not_finite_reason("the patched runs' metric values", patched, [f"L{layer + 1}" for layer in layers])
    if reason is not None:
        return identity | {"skipped": True, "reason": reason}
    record |= {
        "layers": layers, "patched": patched.tolist(), "recovery": ((patched - corrupted_value) / gap).tolist(),
    }
    return record


def _corrupted_letter(scored: ScoredExample, spec: dict[str, Any], corrupted_logits: torch.Tensor) -> tuple[str, str]:
    """The corrupted run's answer letter and where it came from ("dataset" or "model")."""
    field = DATASET_ANSWER_FIELDS.get(spec["name"])
    if field is not None and scored.example.metadata.get(field) is not None:
        index = scored.example.metadata[field]
        letters = scored.example.option_letters
        if not isinstance(index, int) or not 0 <= index < len(letters):
            raise ValueError(
                f"example {scored.example.example_id!r}: metadata[{field!r}]={index!r} is not an option index "
                f"0..{len(letters) - 1}; fix the dataset record"
            )
        return letters[index], "dataset"
    letters = list(scored.letters)
    scores = torch.stack([corrupted_logits[scored.letters[letter]] for letter in letters])
    return letters[int(scores.argmax())], "model"


@dataclass(frozen=True)
class PatchingResult(RecordedResult):
    """The records of one patching run and what the report reads from them."""

    ANALYSIS: ClassVar[str] = ANALYSIS

    @property
    def options(self) -> PatchingOptions:
        data = dict(self.header.options)
        if data.get("layers") is not None:
            data["layers"] = tuple(data["layers"])
        data["corruptions"] = tuple(data["corruptions"])
        return PatchingOptions(**data)

    @property
    def corruptions(self) -> list[str]:
        return [corruption_label(spec) for spec in self.header.options["corruptions"]]

    def baseline(self) -> dict[str, int]:
        return baseline_summary(self.records)

    def patching_records(self, corruption: str, task: str | None = None, *, excluded: bool | None = False) -> list[dict]:
        """Records of one corruption (label), optionally of one task; ``excluded=None`` keeps both kinds."""
        if corruption not in self.corruptions:
            raise ValueError(f"corruption {corruption!r} was not run; this run has {', '.join(self.corruptions)}")
        return [
            r for r in self.records
            if r.get("kind") == "patching" and r["corruption_label"] == corruption and not r.get("skipped")
            and (task is None or r["task"] == task) and (excluded is None or r["excluded"] == excluded)
        ]

    def skipped(self, corruption: str | None = None) -> list[dict]:
        """Examples whose runs under a corruption gave logits that are not finite, each with its reason."""
        return [r for r in self.records if r.get("kind") == "patching" and r.get("skipped")
                and corruption in (None, r["corruption_label"])]

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The report's tables: the runs whose logits were not finite, with the reason (none: no table)."""
        return not_finite_table(self.records)

    def tasks(self, corruption: str) -> list[str]:
        return sorted({r["task"] for r in self.patching_records(corruption, excluded=None)})

    def counts(self, corruption: str, task: str | None = None) -> dict[str, Any]:
        """Examples patched (``n``) and excluded for a clean-corrupted gap below ``min_gap`` (see `skipped` for the
        examples whose numbers were not finite)."""
        return {
            "n": len(self.patching_records(corruption, task)),
            "excluded": len(self.patching_records(corruption, task, excluded=True)),
            "min_gap": self.header.options["min_gap"],
        }

    def layers(self, corruption: str) -> list[int]:
        records = self.patching_records(corruption)
        return records[0]["layers"] if records else []

    def recovery_values(self, corruption: str, task: str | None = None) -> np.ndarray:
        """[example, layer, frame] normalised recovery of the included examples."""
        records = self.patching_records(corruption, task)
        if not records:
            return np.zeros((0, 0, 0))
        return np.asarray([r["recovery"] for r in records], dtype=float)

    def recovery(self, corruption: str, task: str | None = None) -> list[list[MeanCI]]:
        """[layer][frame] mean recovery with its 95% bootstrap interval over the included examples."""
        values = self.recovery_values(corruption, task)
        seed = self.header.seed
        return [[mean_ci(values[:, layer, frame], seed=seed) for frame in range(values.shape[2])] for layer in range(values.shape[1])]

    def metric_values(self, corruption: str, task: str | None = None) -> dict[str, MeanCI]:
        """Clean and corrupted logit differences (mean, CI) over the included examples."""
        records = self.patching_records(corruption, task)
        seed = self.header.seed
        return {
            "clean": mean_ci([r["clean_metric"] for r in records], seed=seed),
            "corrupted": mean_ci([r["corrupted_metric"] for r in records], seed=seed),
        }

    def findings(self) -> list[Finding]:
        """Per corruption: where one frame's clean activation recovers most, and how much at the last layer."""
        out = []
        seed = self.header.seed
        for corruption in self.corruptions:
            counts = self.counts(corruption)
            excluded = f"{counts['excluded']} excluded for a clean–corrupted gap below {counts['min_gap']:g}"
            skipped = self.skipped(corruption)
            if skipped:
                excluded += f"; {len(skipped)} skipped: their logits are not finite"
            values = self.recovery_values(corruption)
            if values.shape[0] == 0:
                out.append(Finding(f"Under {corruption}, no example could be patched ({excluded}).", "none", None, 0))
                continue
            layers = self.layers(corruption)
            means = values.mean(0)
            layer_index, frame = np.unravel_index(int(np.nanargmax(means)), means.shape)
            best = mean_ci(values[:, layer_index, frame], seed=seed)
            p = paired_permutation_p(values[:, layer_index, frame], 0.0, seed=seed)
            quiet = [i for i in range(len(layers)) if np.all(np.abs(means[i:]) < NEGLIGIBLE_RECOVERY)]
            later = (f"from L{layers[quiet[0]] + 1} on, no single frame's mean recovery exceeds {NEGLIGIBLE_RECOVERY:g} in size"
                     if quiet else f"at L{layers[-1] + 1} single frames recover {means[-1].min():.2f} to {means[-1].max():.2f}")
            out.append(Finding(
                f"Under {corruption}, patching the clean {self.header.options['activation']} of frame {frame + 1} at "
                f"L{layers[layer_index] + 1} recovers {best.mean:.2f} [{best.low:.2f}, {best.high:.2f}] of the clean–corrupted "
                f"logit difference, the most of any single frame; {later} ({excluded}).",
                "paired sign-flip permutation test vs. no recovery", p, int(values.shape[0]),
            ))
        return out
