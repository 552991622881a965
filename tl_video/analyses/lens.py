"""Logit lens on video tokens: what vocabulary the video tokens read as, layer by layer (docs/methods.md).

For every analysed example, every video token's residual at every layer is read out as a
distribution over the vocabulary (`video_token_top_k`): by default softmax(W_U ln_final(h)) of
each layer's output; with ``paper_compat`` the reference code's readout (inputs of layers
0..n-2, then ln_final of the last output, each through the input embedding W_E; top 10 kept,
top 5 reported). Three views come out of it:

- vocabulary by layer bin: the top-1 tokens of all video tokens of all examples, counted per
  bin of layers for a spatial and a temporal keyword list, rows normalised to sum 1. Bins are
  non-overlapping, ``min(5, ceil(n_layers / 6))`` layers wide unless given (5 on 32-layer
  models, as in the paper; 1 on the 6-layer built-in model); the last bin may be shorter (the
  reference code's overlapping bins are a defect and are not reproduced);
- the per-frame grid of one example: the top tokens of every video token at every layer, with
  the frame images (thumbnails) so a figure can be drawn from the records alone;
- the answer probability by layer: the option letters' probabilities at the last position,
  softmax(W_U ln_final(resid_post_l)), per layer.

Keyword lists: ``keyword_set="paper"`` uses the paper's objects and actions, ``"synthetic"`` the
words of the synthetic benchmark (colours, shapes, textures; directions and changes), ``"auto"``
(default) picks "synthetic" when every example comes from the synthetic benchmark. Explicit
``spatial_keywords``/``temporal_keywords`` replace a list. A top-1 token matches a keyword when
its text, stripped of spaces and lower-cased, equals it.

Records (``lens.jsonl``): ``baseline/<id>`` per example, ``lens/<id>`` per analysed example
(top-1 token counts per row, letter probabilities per layer), ``grid/<id>`` for the grid example.
Where a readout is not finite at some layer (an fp16 overflow), the example's ``lens`` record is
written as skipped with the reason naming the layers (``skipped: True``) and counts in no number; the
grid then goes to the next analysed example (unless ``grid_example`` names this one: then none).
"""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from jaxtyping import UInt8

from tl_video.analyses.records import RecordSink, RecordedResult, RunHeader
from tl_video.analyses.scoring import (
    ScoredExample, StudyOptions, baseline_summary, not_finite_reason, not_finite_table, scored_examples,
)
from tl_video.analyses.statistics import Finding, MeanCI, mean_ci, paired_permutation_p
from tl_video.data.examples import VideoQAExample
from tl_video.interventions.logit_lens import option_probabilities_by_layer, video_token_top_k

ANALYSIS = "lens"

PAPER_SPATIAL_KEYWORDS = (
    "bag", "bed", "blanket", "book", "box", "cabinet", "clothes", "cup", "door", "floor", "food", "glass",
    "laptop", "paper", "person", "phone", "sandwich", "table",
)
PAPER_TEMPORAL_KEYWORDS = (
    "eat", "close", "down", "drink", "hold", "on", "open", "put", "sit", "throw", "tidy", "take", "up",
)
SYNTHETIC_SPATIAL_KEYWORDS = (  # what the synthetic videos show: colours, shapes, scene textures
    "red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white", "square", "circle", "triangle",
    "stripes", "checkerboard", "dots", "vertical", "horizontal", "diagonal",
)
SYNTHETIC_TEMPORAL_KEYWORDS = (  # how they change: directions, growth, order
    "left", "right", "up", "down", "move", "grows", "shrinks", "stays", "changes", "then", "after", "from",
    "appear",
)
KEYWORD_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "paper": (PAPER_SPATIAL_KEYWORDS, PAPER_TEMPORAL_KEYWORDS),
    "synthetic": (SYNTHETIC_SPATIAL_KEYWORDS, SYNTHETIC_TEMPORAL_KEYWORDS),
}
KEYWORD_KINDS = ("spatial", "temporal")


def default_bin_size(n_layers: int) -> int:
    """Layers per vocabulary bin: 5 (the paper's) on deep models, ceil(n/6) where that is smaller."""
    return max(1, min(5, math.ceil(n_layers / 6)))


def layer_bins(n_rows: int, bin_size: int) -> list[tuple[int, int]]:
    """Non-overlapping [start, stop) bins of ``bin_size`` rows covering 0..n_rows-1 (last may be shorter)."""
    return [(start, min(start + bin_size, n_rows)) for start in range(0, n_rows, bin_size)]


def bin_label(start: int, stop: int) -> str:
    """1-indexed label of a [start, stop) bin: "L1–L5", or "L3" for a single layer."""
    return f"L{start + 1}" if stop - start == 1 else f"L{start + 1}–L{stop}"


def token_key(text: str) -> str:
    """A token's text for keyword matching: without surrounding spaces (or BPE space marks), lower-cased."""
    stripped = text.replace("▁", " ").replace("Ġ", " ").strip().lower()
    return stripped or text


@dataclass(frozen=True, kw_only=True)
class LensOptions(StudyOptions):
    """Options of the logit-lens pipeline (see the module docstring)."""

    paper_compat: bool = False  # the reference readout (layer inputs through W_E); default: outputs through ln_final, W_U
    top_k: int = 10  # tokens kept per video token and layer
    report_k: int = 5  # tokens written to the grid record
    bin_size: int | None = None  # layers per vocabulary bin; None = min(5, ceil(n_layers / 6))
    keyword_set: str = "auto"  # "paper", "synthetic" or "auto" (synthetic when every example is synthetic)
    spatial_keywords: tuple[str, ...] | None = None  # replaces the set's spatial list
    temporal_keywords: tuple[str, ...] | None = None  # replaces the set's temporal list
    grid_example: str | None = None  # example id of the per-frame grid; None = the first analysed example (with finite readouts)
    thumbnail_size: int = 64  # longest side, in pixels, of the frame images stored with the grid

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("top_k", "report_k", "thumbnail_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LensOptions.{name} must be a positive integer, got {value!r}")
        if self.report_k > self.top_k:
            raise ValueError(f"LensOptions.report_k={self.report_k} must not exceed top_k={self.top_k}")
        if self.bin_size is not None and (isinstance(self.bin_size, bool) or not isinstance(self.bin_size, int) or self.bin_size < 1):
            raise ValueError(f"LensOptions.bin_size must be a positive integer or None, got {self.bin_size!r}")
        if self.keyword_set not in (*KEYWORD_SETS, "auto"):
            raise ValueError(f"LensOptions.keyword_set={self.keyword_set!r}; valid: auto, {', '.join(KEYWORD_SETS)}")
        for name in ("spatial_keywords", "temporal_keywords"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str) or not all(isinstance(word, str) and word.strip() for word in value) or not value:
                raise ValueError(f"LensOptions.{name} must be a non-empty list of words, got {value!r}")
            object.__setattr__(self, name, tuple(token_key(word) for word in value))
        if self.grid_example is not None and not isinstance(self.grid_example, str):
            raise ValueError(f"LensOptions.grid_example must be an example id (string) or None, got {self.grid_example!r}")

    def keywords(self, kind: str) -> tuple[str, ...]:
        """The resolved keyword list of ``kind`` ("spatial" or "temporal")."""
        if kind not in KEYWORD_KINDS:
            raise ValueError(f"keyword kind {kind!r}; valid: {', '.join(KEYWORD_KINDS)}")
        words = self.spatial_keywords if kind == "spatial" else self.temporal_keywords
        if words is None:
            raise ValueError("keywords are resolved when the pipeline runs; read them from a result's options")
        return words


def resolve_options(options: LensOptions, n_layers: int, examples: Sequence[VideoQAExample]) -> LensOptions:
    """Options with the bin size and keyword lists made concrete (what the record header stores)."""
    keyword_set = options.keyword_set
    if keyword_set == "auto":
        keyword_set = "synthetic" if examples and all(e.source == "synthetic" for e in examples) else "paper"
    spatial, temporal = KEYWORD_SETS[keyword_set]
    return replace(
        options, keyword_set=keyword_set, bin_size=options.bin_size or default_bin_size(n_layers),
        spatial_keywords=options.spatial_keywords or spatial, temporal_keywords=options.temporal_keywords or temporal,
    )


def run_lens(
    model: Any, examples: Sequence[VideoQAExample], options: LensOptions = LensOptions(), *,
    out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
) -> "LensResult":
    """Run the logit lens on the selected examples; records go to ``<out_dir>/lens.jsonl`` as produced."""
    options = resolve_options(options, model.cfg.n_layers, examples)
    header = RunHeader.for_model(model, analysis=ANALYSIS, dataset=options.dataset, options=options.to_json(), seed=options.seed)
    sink = RecordSink.open(None if out_dir is None else Path(out_dir) / f"{ANALYSIS}.jsonl", header, resume=resume)
    grid_id = options.grid_example  # None: the first analysed example whose readouts are finite
    if grid_id is not None and grid_id not in {e.example_id for e in examples}:
        raise ValueError(f"LensOptions.grid_example={grid_id!r} is not among the examples; give one of their example_id values")
    has_grid = any(r.get("kind") == "grid" for r in sink.records)
    for scored in scored_examples(model, examples, options, sink=sink, progress=progress, desc="logit lens"):
        example_id = scored.example.example_id
        done = sink.get(f"lens/{example_id}")
        want_grid = not has_grid and grid_id in (None, example_id) and not (done and done.get("skipped"))
        if done is not None and not want_grid:
            continue
        lens = video_token_top_k(model, scored.prepared, k=options.top_k, paper_compat=options.paper_compat)
        letters, probabilities = option_probabilities_by_layer(model, scored.prepared, scored.letters)
        reason = (not_finite_reason("the video tokens' readouts", lens.top_probabilities, lens.points)
                  or not_finite_reason("the letter probabilities", probabilities,
                                       [f"output of L{layer + 1}" for layer in range(len(probabilities))]))
        records = []
        if done is None:
            records.append(lens_record(model, scored, lens, letters, probabilities) if reason is None
                           else _skipped(scored, reason))
        if want_grid and reason is None:  # a grid is drawn from finite readouts only: else the next example's
            records.append(grid_record(model, scored, lens, options))
            has_grid = True
        sink.append_many(records)  # an example's records go to disk together
    return LensResult(header=sink.header, records=list(sink.records))


def _skipped(scored: ScoredExample, reason: str) -> dict[str, Any]:
    """The lens record of an example whose readouts are not finite: its key, the reason, no number."""
    example_id = scored.example.example_id
    return {"key": f"lens/{example_id}", "kind": "lens", "example_id": example_id, "task": scored.task,
            "skipped": True, "reason": reason}


def lens_record(model: Any, scored: ScoredExample, lens: Any, letters: list[str] | None = None,
                probabilities: Any = None) -> dict[str, Any]:
    """The per-example record: top-1 token counts per probed row and letter probabilities per layer
    (``letters``/``probabilities``: `option_probabilities_by_layer` of this example, computed when not given)."""
    top1 = lens.top_ids[:, :, 0]
    texts = _token_texts(model.tokenizer, top1.unique().tolist())
    counts = [dict(Counter(texts[int(i)] for i in row.tolist())) for row in top1]
    if probabilities is None:
        letters, probabilities = option_probabilities_by_layer(model, scored.prepared, scored.letters)
    example = scored.example
    return {
        "key": f"lens/{example.example_id}", "kind": "lens", "example_id": example.example_id, "task": scored.task,
        "skipped": False, "true_letter": scored.true_letter, "probes": lens.probes, "points": list(lens.points),
        "n_video_tokens": int(top1.shape[1]), "top1_counts": counts,
        "letter_probabilities": {letter: probabilities[:, i].tolist() for i, letter in enumerate(letters)},
        "answer_probability": probabilities[:, letters.index(scored.true_letter)].tolist(),
    }


def grid_record(model: Any, scored: ScoredExample, lens: Any, options: LensOptions) -> dict[str, Any]:
    """The per-frame grid of one example: top tokens of every video token at every row, with frame thumbnails."""
    ids = lens.top_ids[:, :, : options.report_k]
    texts = _token_texts(model.tokenizer, ids.unique().tolist())
    example = scored.example
    return {
        "key": f"grid/{example.example_id}", "kind": "grid", "example_id": example.example_id, "task": scored.task,
        "skipped": False, "question": example.question, "probes": lens.probes, "points": list(lens.points),
        "video_grid": [list(cell) for cell in lens.video_grid], "frame_unit": scored.prepared.layout.frame_unit,
        "top_ids": ids.tolist(), "top_tokens": [[[texts[int(i)] for i in cell] for cell in row] for row in ids.tolist()],
        "top_probabilities": lens.top_probabilities[:, :, : options.report_k].tolist(),
        "frames_png": [encode_thumbnail(frame, options.thumbnail_size) for frame in scored.prepared.frames],
    }


def encode_thumbnail(frame: UInt8[np.ndarray, "height width 3"], size: int) -> str:
    """A frame as a base64 PNG whose longest side is at most ``size`` pixels."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame))
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _token_texts(tokenizer: Any, ids: list[int]) -> dict[int, str]:
    """Each token's text; a token that is part of a multi-byte character keeps its vocabulary name ("<0xE2>")."""
    texts = {}
    for i in ids:
        text = tokenizer.decode([int(i)])
        texts[int(i)] = tokenizer.convert_ids_to_tokens(int(i)) if "\ufffd" in text else text
    return texts


@dataclass(frozen=True)
class VocabularyTable:
    """Keyword counts of one list per layer bin; ``shares`` are the counts with rows normalised to sum 1."""

    kind: str  # "spatial" or "temporal"
    bins: list[str]  # "L1–L5", ...
    keywords: list[str]
    counts: list[list[int]]  # [bin][keyword]
    shares: list[list[float]]  # [bin][keyword], each row sums to 1 (NaN where the bin has no keyword at all)
    n_readouts: list[int]  # [bin]: top-1 readouts counted (video tokens x layers x examples): the denominator
    keyword_fraction: list[float]  # [bin]: fraction of the readouts that are one of the keywords


@dataclass(frozen=True)
class LensResult(RecordedResult):
    """The records of one logit-lens run and what the report reads from them."""

    ANALYSIS: ClassVar[str] = ANALYSIS

    @property
    def options(self) -> LensOptions:
        data = dict(self.header.options)
        for name in ("spatial_keywords", "temporal_keywords"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return LensOptions(**data)

    def lens_records(self, task: str | None = None) -> list[dict]:
        return [r for r in self.records if r.get("kind") == "lens" and not r.get("skipped") and (task is None or r["task"] == task)]

    def skipped(self) -> list[dict]:
        """Examples whose readouts were not finite, each with its reason (they count in no number)."""
        return [r for r in self.records if r.get("kind") == "lens" and r.get("skipped")]

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The report's tables: the examples whose readouts were not finite, with the reason (none: no table)."""
        return not_finite_table(self.records)

    def grid(self, example_id: str | None = None) -> dict:
        """The grid record (of ``example_id``, or the only one written)."""
        grids = [r for r in self.records if r.get("kind") == "grid" and example_id in (None, r["example_id"])]
        if not grids:
            wanted = example_id or self.header.options.get("grid_example")
            lost = next((r["reason"] for r in self.skipped() if r["example_id"] == wanted), None)
            why = f" (its readouts were skipped: {lost})" if lost else ""
            raise ValueError(f"no per-frame grid recorded{'' if wanted is None else f' for {wanted!r}'}{why}")
        return grids[0]

    @property
    def tasks(self) -> list[str]:
        return sorted({r["task"] for r in self.lens_records()})

    @property
    def points(self) -> list[str]:
        records = self.lens_records()
        return records[0]["points"] if records else []

    @property
    def bins(self) -> list[tuple[int, int]]:
        return layer_bins(len(self.points), self.options.bin_size)

    @property
    def bin_labels(self) -> list[str]:
        return [bin_label(*b) for b in self.bins]

    def baseline(self) -> dict[str, int]:
        return baseline_summary(self.records)

    def bin_counts(self, record: dict) -> list[Counter]:
        """Top-1 token counts of one lens record, summed per bin (keys normalised by `token_key`)."""
        out = []
        for start, stop in self.bins:
            counter: Counter = Counter()
            for row in record["top1_counts"][start:stop]:
                for text, n in row.items():
                    counter[token_key(text)] += n
            out.append(counter)
        return out

    def vocabulary(self, kind: str = "spatial") -> VocabularyTable:
        """Keyword counts per layer bin over all analysed examples, rows normalised to sum 1."""
        keywords = list(self.options.keywords(kind))
        totals = [Counter() for _ in self.bins]
        for record in self.lens_records():
            for total, counter in zip(totals, self.bin_counts(record)):
                total.update(counter)
        counts = [[total[word] for word in keywords] for total in totals]
        shares = [[c / sum(row) if sum(row) else float("nan") for c in row] for row in counts]
        n_readouts = [sum(total.values()) for total in totals]
        fraction = [sum(row) / n if n else float("nan") for row, n in zip(counts, n_readouts)]
        return VocabularyTable(kind, self.bin_labels, keywords, counts, shares, n_readouts, fraction)

    def keyword_fraction_per_example(self, kind: str) -> np.ndarray:
        """[example, bin]: the fraction of an example's top-1 readouts in each bin that are keywords of ``kind``."""
        keywords = set(self.options.keywords(kind))
        rows = []
        for record in self.lens_records():
            rows.append([
                sum(n for text, n in counter.items() if text in keywords) / max(1, sum(counter.values()))
                for counter in self.bin_counts(record)
            ])
        return np.asarray(rows, dtype=float).reshape(-1, len(self.bins))

    def answer_probability(self, task: str | None = None) -> list[MeanCI]:
        """Per layer: the true option letter's probability at the last position, mean and 95% CI over examples."""
        values = np.asarray([r["answer_probability"] for r in self.lens_records(task)], dtype=float)
        if values.size == 0:
            return []
        return [mean_ci(values[:, layer], seed=self.header.seed) for layer in range(values.shape[1])]

    def findings(self) -> list[Finding]:
        """Plain sentences from the numbers, each with its test and number of examples."""
        records = self.lens_records()
        if not records:
            return []
        seed, out = self.header.seed, []
        values = np.asarray([r["answer_probability"] for r in records], dtype=float)
        n_layers = values.shape[1]
        if n_layers > 1:
            rises = np.diff(values, axis=1).mean(0)
            layer = int(np.argmax(rises)) + 1
            p = paired_permutation_p(values[:, layer], values[:, layer - 1], seed=seed)
            out.append(Finding(
                f"The true option's probability at the last position is {values[:, 0].mean():.2f} after L1 and "
                f"{values[:, -1].mean():.2f} after L{n_layers}; its largest rise is from L{layer} to L{layer + 1} "
                f"({values[:, layer - 1].mean():.2f} → {values[:, layer].mean():.2f}).",
                f"paired sign-flip permutation test, L{layer + 1} vs L{layer}", p, len(records),
            ))
        if len(self.bins) > 1:
            for kind in KEYWORD_KINDS:
                fraction = self.keyword_fraction_per_example(kind)
                first, last = fraction[:, 0], fraction[:, -1]
                p = paired_permutation_p(last, first, seed=seed)
                labels = self.bin_labels
                out.append(Finding(
                    f"{fraction.mean(0)[0]:.0%} of the video tokens' top-1 readouts are {kind} keywords in "
                    f"{labels[0]} and {fraction.mean(0)[-1]:.0%} in {labels[-1]} ({self.options.keyword_set} keyword list).",
                    f"paired sign-flip permutation test over examples, {labels[-1]} vs {labels[0]}", p, len(records),
                ))
        return out
