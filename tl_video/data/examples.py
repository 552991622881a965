"""One VideoQA example: a video (optionally a time window), a question, its options and answer.

Every dataset reader (TVBench, TOMATO, our JSONL, the synthetic benchmark) produces
:class:`VideoQAExample` records, so prompts and analyses never see a dataset's own format.
Multiple choice is the paper's setting (docs/methods.md, "Data"): options are shown as "(A) ...",
"(B) ..." and the answer is the letter of ``answer_index``. Open-ended examples have no options and
no ``answer_index``.

Records are frozen, keyword-only and validated on construction: an answer index outside the
options, a window with ``start >= end`` or metadata that cannot be written as JSON raise
immediately, naming the example and the field.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from typing import Any

__all__ = ["VideoQAExample", "InvalidExampleError", "OPTION_LETTERS", "check_unique_ids"]

OPTION_LETTERS = string.ascii_uppercase
"""Option letters in order: option 0 is "A"."""


class InvalidExampleError(ValueError):
    """A :class:`VideoQAExample` field is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True, kw_only=True)
class VideoQAExample:
    """A VideoQA example.

    Attributes:
        example_id: unique id within its dataset (e.g. ``"action_sequence/00017"``).
        video: path of the video file.
        question: the question text, without the options.
        options: the answer options in display order; empty for open-ended questions.
        answer_index: index into ``options`` of the correct answer; ``None`` if open-ended or unlabelled.
        start, end: the window of the video the question is about, in seconds; ``None`` for the
            start/end of the video.
        task: the task or category (e.g. ``"moving_direction"``).
        source: the dataset it came from (e.g. ``"tvbench"``).
        metadata: anything else, JSON-serialisable (dataset-specific fields, ground-truth details).
    """

    example_id: str
    video: str
    question: str
    options: tuple[str, ...] = ()
    answer_index: int | None = None
    start: float | None = None
    end: float | None = None
    task: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        where = f"VideoQAExample {self.example_id!r}"
        for name in ("example_id", "video", "question"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidExampleError(name, f"{where}: {name} must be a non-empty string, got {value!r}.")
        for name in ("task", "source"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidExampleError(name, f"{where}: {name} must be a string or None, got {value!r}.")

        if isinstance(self.options, (str, bytes)) or not hasattr(self.options, "__iter__"):
            raise InvalidExampleError("options", f"{where}: options must be a list of strings, got {self.options!r}.")
        if isinstance(self.options, (Mapping, AbstractSet)):
            raise InvalidExampleError(
                "options",
                f"{where}: options must be a list of strings in display order, got a {type(self.options).__name__} "
                "(a mapping would keep only its keys, a set has no order); pass list(...) of the option texts.",
            )
        options = tuple(self.options)
        bad = [i for i, o in enumerate(options) if not isinstance(o, str) or not o.strip()]
        if bad:
            raise InvalidExampleError("options", f"{where}: options {bad} are not non-empty strings: {[options[i] for i in bad]!r}.")
        if len(options) > len(OPTION_LETTERS):
            raise InvalidExampleError("options", f"{where}: {len(options)} options; at most {len(OPTION_LETTERS)} can be lettered A..Z.")
        object.__setattr__(self, "options", options)

        if self.answer_index is not None:
            if isinstance(self.answer_index, bool) or not isinstance(self.answer_index, Integral):
                raise InvalidExampleError("answer_index", f"{where}: answer_index must be an int or None, got {self.answer_index!r}.")
            if not options:
                raise InvalidExampleError(
                    "answer_index",
                    f"{where}: answer_index={self.answer_index} but there are no options; open-ended examples "
                    "have answer_index=None."
                )
            if not 0 <= self.answer_index < len(options):
                raise InvalidExampleError(
                    "answer_index",
                    f"{where}: answer_index={self.answer_index} is out of range for {len(options)} options "
                    f"(valid 0..{len(options) - 1})."
                )
            object.__setattr__(self, "answer_index", int(self.answer_index))
            answer = options[self.answer_index]
            repeats = [i for i, option in enumerate(options) if option.strip() == answer.strip()]
            if len(repeats) > 1:
                raise InvalidExampleError(
                    "options",
                    f"{where}: the answer {answer!r} appears as options {repeats}, so its letter is ambiguous; "
                    "remove the duplicate option.",
                )

        for name in ("start", "end"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
                raise InvalidExampleError(name, f"{where}: {name} must be a non-negative number of seconds or None, got {value!r}.")
            object.__setattr__(self, name, float(value))
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise InvalidExampleError("start", f"{where}: start={self.start} s is not before end={self.end} s.")

        if not isinstance(self.metadata, dict):
            raise InvalidExampleError("metadata", f"{where}: metadata must be a dict, got {type(self.metadata).__name__}.")
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as exc:
            raise InvalidExampleError("metadata", f"{where}: metadata is not JSON-serialisable ({exc}); store plain str/int/float/list/dict.") from exc
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def is_multiple_choice(self) -> bool:
        """True when the example has options."""
        return bool(self.options)

    @property
    def answer_text(self) -> str | None:
        """The correct option's text, or ``None`` when there is no ``answer_index``."""
        return None if self.answer_index is None else self.options[self.answer_index]

    @property
    def answer_letter(self) -> str | None:
        """The correct option's letter ("A" for option 0), or ``None`` when there is no ``answer_index``."""
        return None if self.answer_index is None else OPTION_LETTERS[self.answer_index]

    @property
    def option_letters(self) -> tuple[str, ...]:
        """The letters of the options in order: ``("A", "B", ...)``."""
        return tuple(OPTION_LETTERS[: len(self.options)])

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict of every field (options as a list); inverse of :meth:`from_json`."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["options"] = list(self.options)
        out["metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoQAExample:
        """Build an example from :meth:`to_json` output; unknown or missing fields raise with the valid ones."""
        if not isinstance(data, dict):
            raise InvalidExampleError("record", f"a VideoQAExample record must be a JSON object, got {type(data).__name__}.")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InvalidExampleError(unknown[0], f"unknown VideoQAExample field(s) {unknown}; valid fields: {names}.")
        missing = [n for n in ("example_id", "video", "question") if n not in data]
        if missing:
            raise InvalidExampleError(missing[0], f"VideoQAExample record is missing required field(s) {missing}.")
        return cls(**data)


def check_unique_ids(examples: Iterable[VideoQAExample], where: str = "examples") -> None:
    """Raise when two examples share an ``example_id``: ids name the records of a run, so a repeat would be lost."""
    seen: dict[str, int] = {}
    for index, example in enumerate(examples):
        first = seen.setdefault(example.example_id, index)
        if first != index:
            raise ValueError(
                f"{where}: example_id {example.example_id!r} is used by examples {first} and {index}; records are keyed "
                "by id, so give every example a unique example_id"
            )
