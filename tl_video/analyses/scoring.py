"""The baseline of every study pipeline: prepare an example, answer it, decide whether to analyse it.

The answer is read at the last position after the answer prompt ("Best option:("): ``a`` is the
argmax over the whole vocabulary, and the example is answered correctly when ``a`` is the true
option's letter token (resolved through the tokenizer in context). The paper analyses only the
examples a model answers correctly (``samples="correct"``, the default); ``"wrong"`` and ``"all"``
are the alternatives. Every pipeline writes one ``baseline`` record per example, so each rate in a
report states its denominator.

An example that cannot be analysed (its video cannot be decoded, its input is longer than the
model's context, or the model's logits are not finite, e.g. an fp16 overflow) gets a ``skipped``
record with the reason under the same key instead, and the run goes on; skipped examples count in
no denominator, and the report states how many there were and why. A repeated example id is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from tl_video.analyses.distributed import owns
from tl_video.data.examples import VideoQAExample, check_unique_ids
from tl_video.prompts.answers import answer_token_id, option_token_ids
from tl_video.prompts.prepare import InputTooLongError, prepare_example
from tl_video.prompts.prepared import PreparedInput
from tl_video.video.errors import VideoError

Samples = Literal["correct", "all", "wrong"]
SAMPLE_MODES: tuple[str, ...] = ("correct", "all", "wrong")
PROMPT_STYLES: tuple[str, ...] = ("chat", "paper")


class NonFiniteLogitsError(ValueError):
    """The model's logits hold NaN or inf (e.g. an overflow in float16): no probability can be read from them."""


SKIPPED_PROBLEMS = (VideoError, InputTooLongError, NonFiniteLogitsError)  # an example with one of these is skipped, with its reason
NOT_FINITE = "not finite (NaN or inf: an overflow?); run in float32 or bfloat16"  # the end of every such skip's reason


def not_finite_reason(what: str, values: Any, where: Sequence[str] | None = None) -> str | None:
    """Why a record cannot hold ``values``: some are NaN or inf (e.g. an fp16 overflow), or None when all are finite.

    Every pipeline checks the numbers it is about to record with this and, given a reason, writes a record with
    ``skipped: True`` and the reason instead, so no NaN is written or averaged. ``where`` names the rows of
    ``values`` (e.g. "output of L5" per layer): the reason then says which rows are not finite.
    """
    tensor = values.detach() if isinstance(values, torch.Tensor) else torch.as_tensor(values, dtype=torch.float64)
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return None
    if where is not None and tensor.dim() > 0:
        bad = [name for name, ok in zip(where, finite.reshape(len(where), -1).all(-1).tolist()) if not ok]
        return f"{what} at {', '.join(bad)} are {NOT_FINITE}"
    return f"{what} {'are' if tensor.numel() > 1 else 'is'} {NOT_FINITE}"


def not_finite_runs(records: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The runs not evaluated because their numbers were not finite: record key and reason, in record order."""
    rows = [{"record": r["key"], "reason": r["reason"]} for r in records
            if r.get("skipped") and NOT_FINITE in str(r.get("reason"))]
    return rows + [{"record": r["key"], "reason": r["generation_skipped"]} for r in records if r.get("generation_skipped")]


def not_finite_table(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The report's table of the runs not evaluated because their numbers were not finite (no table when none),
    so such skips show in the report, each with its reason."""
    rows = not_finite_runs(records)
    return {f"Not evaluated: numbers not finite ({len(rows)})": rows} if rows else {}


@dataclass(frozen=True, kw_only=True)
class StudyOptions:
    """Options every study pipeline shares (each pipeline adds its own)."""

    num_frames: int | None = None  # frames sampled per video; None = the library default (8)
    prompt_style: str = "chat"  # "chat": the model's chat template; "paper": the reference code's literal text
    samples: str = "correct"  # which examples to analyse: answered "correct"ly at baseline, "wrong"ly, or "all"
    seed: int = 0  # bootstrap intervals, permutation tests, random baselines
    dataset: str = "examples"  # name written into every record file

    def __post_init__(self) -> None:
        if self.samples not in SAMPLE_MODES:
            raise ValueError(f"samples={self.samples!r}; valid: {', '.join(SAMPLE_MODES)}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style={self.prompt_style!r}; valid: {', '.join(PROMPT_STYLES)}")
        if self.num_frames is not None and (isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int) or self.num_frames < 1):
            raise ValueError(f"num_frames must be a positive integer or None, got {self.num_frames!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class ScoredExample:
    """One prepared multiple-choice example with the model's baseline answer."""

    example: VideoQAExample
    prepared: PreparedInput
    letters: dict[str, int]  # option letter -> its answer token id, in option order
    probabilities: Float[torch.Tensor, "d_vocab"] = field(repr=False)  # baseline softmax at the last position
    answer_token: int  # baseline argmax over the vocabulary
    true_token: int
    true_variants: tuple[int, ...] = ()  # other tokens that also answer the true letter: its lower case, in context

    def is_true(self, token: int) -> bool:
        """Whether ``token`` answers the true option: its letter in either case (accuracy ignores case)."""
        return token == self.true_token or token in self.true_variants

    @property
    def correct(self) -> bool:
        return self.is_true(self.answer_token)

    @property
    def true_letter(self) -> str:
        return self.prepared.layout.true_option

    @property
    def task(self) -> str:
        return self.example.task or "all"

    def baseline_record(self, selected: bool) -> dict[str, Any]:
        letter_probabilities = {letter: float(self.probabilities[token]) for letter, token in self.letters.items()}
        return {
            "key": f"baseline/{self.example.example_id}", "kind": "baseline", "example_id": self.example.example_id,
            "task": self.task, "true_letter": self.true_letter, "answer_token": self.answer_token,
            "correct": self.correct, "selected": selected, "letter_probabilities": letter_probabilities,
            "n_tokens": self.prepared.layout.n_tokens, "n_video_tokens": len(self.prepared.layout.video_positions),
        }


def prepare_for_study(model: Any, example: VideoQAExample, options: StudyOptions, **kwargs: Any) -> PreparedInput:
    """`prepare_example` with the study's frame count and prompt style (extra kwargs, e.g. `video=`, pass on)."""
    if options.num_frames is not None:
        kwargs.setdefault("num_frames", options.num_frames)
    if options.prompt_style != "chat":
        kwargs.setdefault("prompt_style", options.prompt_style)
    return prepare_example(model, example, **kwargs)


@torch.no_grad()
def score_example(model: Any, example: VideoQAExample, options: StudyOptions, **kwargs: Any) -> ScoredExample:
    """Prepare ``example`` and read the model's baseline answer distribution at the last position."""
    if not example.is_multiple_choice or example.answer_index is None:
        raise ValueError(
            f"example {example.example_id!r}: the study's pipelines need a multiple-choice example with a known "
            "answer (options and answer_index)"
        )
    prepared = prepare_for_study(model, example, options, **kwargs)
    letters = option_token_ids(model.tokenizer, prepared)
    logits = model(prepared.tokens)[0, -1]
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).sum())
        raise NonFiniteLogitsError(
            f"example {example.example_id!r}: {bad} of {logits.numel()} logits at the answer position are NaN or inf "
            f"in {str(logits.dtype).replace('torch.', '')} (an overflow?); run in float32 or bfloat16"
        )
    probabilities = logits.float().softmax(-1).cpu()
    true_token = letters[prepared.layout.true_option]
    return ScoredExample(
        example=example, prepared=prepared, letters=letters, probabilities=probabilities,
        answer_token=int(probabilities.argmax()), true_token=true_token,
        true_variants=lower_case_variants(model.tokenizer, prepared, prepared.layout.true_option, exclude=set(letters.values())),
    )


def lower_case_variants(tokenizer: Any, prepared: PreparedInput, letter: str, exclude: set[int]) -> tuple[int, ...]:
    """The token of ``letter`` in lower case after this prompt, when it is one token that is no option's letter.

    The reference code compares answers case-sensitively (a model answering "(b" to option B is
    counted wrong); the study does not (docs/methods.md, "Deliberate differences").
    """
    try:
        token = answer_token_id(tokenizer, prepared.text, letter.lower())
    except ValueError:  # not a single token in this context: nothing to accept
        return ()
    return () if token in exclude else (token,)


def is_selected(scored: ScoredExample, samples: str) -> bool:
    return samples == "all" or scored.correct == (samples == "correct")


def scored_examples(
    model: Any, examples: Sequence[VideoQAExample], options: StudyOptions, *, sink: Any = None,
    progress: bool = True, desc: str = "examples",
) -> Iterator[ScoredExample]:
    """Score each example, write its baseline record to ``sink``, and yield the selected ones.

    Examples whose baseline record is already in ``sink`` (a resumed run) are re-scored only if
    selected, so resuming never changes the example set. Each example's videos (and any the caller
    prepares while holding it, e.g. a corrupted copy) live in a `video_bank.scope()` that ends when the
    next example is requested, so the bank never holds more than one example's videos.
    """
    if not examples:
        raise ValueError("no examples to analyse")
    check_unique_ids(examples)
    for example in tqdm(examples, desc=desc, unit="example", disable=not progress, leave=False):
        if not owns(example):  # another process's shard (tl_video.analyses.distributed)
            continue
        key = f"baseline/{example.example_id}"
        previous = None if sink is None else sink.get(key)
        if previous is not None and sink.written_now(key):
            raise ValueError(
                f"example_id {example.example_id!r} was already analysed in this run; records are keyed by id, "
                "so give every example a unique example_id"
            )
        if previous is not None and not previous["selected"]:
            continue
        with model.video_bank.scope():
            try:
                scored = score_example(model, example, options)
            except SKIPPED_PROBLEMS as error:
                if sink is None or previous is not None:
                    raise  # nowhere to record the skip, or scored before and failing now: the data changed
                sink.append(skipped_record(example, error))
                continue
            if previous is None:
                selected = is_selected(scored, options.samples)
                if sink is not None:
                    sink.append(scored.baseline_record(selected))
                if not selected:
                    continue
            yield scored


def skipped_record(example: VideoQAExample, error: BaseException) -> dict[str, Any]:
    """The record of an example that could not be analysed: under its baseline key, with the reason."""
    return {
        "key": f"baseline/{example.example_id}", "kind": "skipped", "example_id": example.example_id,
        "task": example.task or "all", "selected": False, "error": type(error).__name__,
        "reason": " ".join(str(error).split()) or type(error).__name__,
    }


def skipped_examples(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``skipped`` records of a run (examples that could not be analysed), each with its reason; they
    count in none of `baseline_summary`'s numbers."""
    return [r for r in records if r.get("kind") == "skipped"]


def baseline_summary(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Counts over the baseline records of a run: examples, answered correctly, analysed."""
    baselines = [r for r in records if r.get("kind") == "baseline"]
    return {
        "n_examples": len(baselines),
        "n_correct": sum(bool(r["correct"]) for r in baselines),
        "n_selected": sum(bool(r["selected"]) for r in baselines),
    }
