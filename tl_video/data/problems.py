"""How dataset readers report bad records: all at once, each with its file, index and field.

A benchmark file with a few broken records (a missing video, an answer that is not among the
options, a line that is not JSON) should not fail one record at a time, and must never turn into a
silently wrong label. Every reader therefore checks every record and then either

- raises one :class:`DatasetError` listing the problems (``on_error="raise"``, the default), or
- returns the good records and the problems (``on_error="skip"``) and warns with the count.

Both modes return a :class:`ReadResult` (iterable over its examples), so a reader has one return
type.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from tl_video.data.examples import VideoQAExample

__all__ = ["RecordProblem", "DatasetError", "DatasetWarning", "ReadResult", "OnError", "check_on_error", "finish"]

OnError = Literal["raise", "skip"]

_MAX_LISTED = 50
"""Problems spelled out in a DatasetError message; all of them are in ``DatasetError.problems``."""


@dataclass(frozen=True, kw_only=True)
class RecordProblem:
    """One problem with one record.

    Attributes:
        file: the dataset file.
        index: 0-based position of the record in the file (the line index for JSONL), or ``None``
            for a problem with the whole file.
        field: the field at fault (e.g. ``"answer"``, ``"video"``), or ``"record"`` / ``"file"``.
        message: what is wrong and, where it helps, how to fix it.
    """

    file: str
    index: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = "whole file" if self.index is None else f"record {self.index}"
        return f"{where}, field {self.field!r}: {self.message}"


class DatasetError(ValueError):
    """A dataset file has bad records; ``problems`` lists every one of them."""

    def __init__(self, file: str, problems: Sequence[RecordProblem], total: int | None = None) -> None:
        self.file = file
        self.problems = tuple(problems)
        self.total = total
        super().__init__(self._message())

    def _message(self) -> str:
        n = len(self.problems)
        of = f" of {self.total}" if self.total is not None else ""
        lines = [f"{n} problem(s) in {self.file}{of} record(s):"]
        lines += [f"  - {p}" for p in self.problems[:_MAX_LISTED]]
        if n > _MAX_LISTED:
            lines.append(f"  ... and {n - _MAX_LISTED} more (all are in DatasetError.problems)")
        if self.total and n and all(p.field == "video" for p in self.problems) and n >= self.total:
            lines.append("No record's video was found: is video_root right?")
        if self.total is not None:
            bad = len({p.index for p in self.problems})
            lines.append(
                f"Fix these records, or pass on_error='skip' to load the {self.total - bad} good record(s) "
                "and get the problems in ReadResult.problems."
            )
        return "\n".join(lines)


class DatasetWarning(UserWarning):
    """Records were skipped with ``on_error="skip"``."""


@dataclass(frozen=True, kw_only=True)
class ReadResult:
    """What a reader returns: the good examples, and the problems of the skipped records.

    Iterating, ``len`` and indexing go to ``examples``. ``problems`` is empty unless
    ``on_error="skip"`` skipped records.
    """

    examples: tuple[VideoQAExample, ...]
    problems: tuple[RecordProblem, ...] = ()

    def __iter__(self) -> Iterator[VideoQAExample]:
        return iter(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> VideoQAExample:
        return self.examples[index]


def check_on_error(on_error: str) -> None:
    """Raise unless ``on_error`` is ``"raise"`` or ``"skip"``."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")


def finish(
    file: str,
    examples: Sequence[VideoQAExample],
    problems: Sequence[RecordProblem],
    total: int,
    on_error: OnError,
) -> ReadResult:
    """End a read: raise every problem at once, or warn and return the good examples with the problems."""
    if problems and on_error == "raise":
        raise DatasetError(file, problems, total)
    if problems:
        skipped = len({p.index for p in problems})
        warnings.warn(
            f"skipped {skipped} of {total} record(s) in {file} ({len(problems)} problem(s)); "
            "see ReadResult.problems.",
            DatasetWarning,
            stacklevel=3,
        )
    return ReadResult(examples=tuple(examples), problems=tuple(problems))
