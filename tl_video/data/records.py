"""Checking raw dataset records field by field, collecting every problem instead of stopping at the first.

Shared by the readers in this package: :func:`load_json_file` opens a dataset file,
:class:`RecordCheck` pulls typed fields out of one raw record and remembers what was wrong with it,
and :func:`video_problem` checks that a record's video exists.
"""

from __future__ import annotations

import json
import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from tl_video.data.examples import InvalidExampleError, VideoQAExample
from tl_video.data.problems import DatasetError, RecordProblem

__all__ = ["load_json_file", "decode_json", "JsonTextError", "RecordCheck", "video_problem"]


class JsonTextError(ValueError):
    """JSON text that cannot be read; the message names the line (1-based) and what to fix."""


def decode_json(raw: bytes, first_line: int = 1) -> Any:
    """Parse UTF-8 JSON bytes (a leading BOM is allowed).

    Undecodable bytes, bad syntax and nesting too deep to parse raise a :class:`JsonTextError`
    naming the line, counting the first line of ``raw`` as ``first_line``.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _line_and_column(raw, exc.start, first_line)
        raise JsonTextError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column}; re-save the file as UTF-8"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKeyError as exc:
        raise JsonTextError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise JsonTextError(f"not valid JSON: {exc.msg} at line {exc.lineno + first_line - 1}, column {exc.colno}") from None
    except RecursionError:
        offset = _too_deep_offset(text)
        line, column = _line_and_column(text.encode("utf-8"), len(text[:offset].encode("utf-8")), first_line)
        raise JsonTextError(
            f"JSON nested more than {_MAX_DEPTH} levels deep at line {line}, column {column}; "
            "an annotation record is never this deep (a corrupt or generated file?)"
        ) from None


_MAX_DEPTH = 500


class DuplicateKeyError(ValueError):
    """One JSON object names the same key twice (Python's json keeps only the last: a record would be lost)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(
                f"the key {key!r} appears twice in one JSON object; JSON readers keep only the last, so a record "
                "or field would be lost silently: make the keys unique"
            )
        out[key] = value
    return out


def _line_and_column(raw: bytes, offset: int, first_line: int) -> tuple[int, int]:
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + first_line, offset - line_start + 1


def _too_deep_offset(text: str) -> int:
    """Where the nesting of arrays/objects (outside strings) first exceeds `_MAX_DEPTH`."""
    depth, in_string, escaped = 0, False, False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return index
        elif char in "]}":
            depth -= 1
    return 0


def load_json_file(path: str | Path) -> Any:
    """Parse a JSON file; a missing file raises ``FileNotFoundError``, unreadable JSON a :class:`DatasetError`
    whose message names the file and the line."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(f"dataset path {str(path)!r} is a folder; pass the annotation file inside it (e.g. a .json or .jsonl file).")
        raise FileNotFoundError(f"dataset file not found: {str(path)!r} (resolved: {path.absolute()}).")
    raw = path.read_bytes()
    if not raw.strip():
        raise DatasetError(str(path), [RecordProblem(file=str(path), index=None, field="file",
                                                     message="the file is empty: it holds no records (an interrupted download or copy?)")])
    try:
        return decode_json(raw)
    except JsonTextError as exc:
        raise DatasetError(str(path), [RecordProblem(file=str(path), index=None, field="file", message=str(exc))]) from None


def video_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable video file, or ``None`` if it is a file."""
    if path.is_file():
        return None
    if path.exists():
        return f"video path {str(path)!r} is not a file"
    return f"video file not found: {str(path)!r}"


class RecordCheck:
    """Typed access to one raw record that collects problems instead of raising.

    Each getter returns the value, or ``None`` after recording a problem; :meth:`build` makes the
    :class:`VideoQAExample` only if the record had no problem.
    """

    def __init__(self, file: str, index: int, record: object) -> None:
        self.file = file
        self.index = index
        self.problems: list[RecordProblem] = []
        self.record: dict[str, Any] = record if isinstance(record, dict) else {}
        if not isinstance(record, dict):
            self.add("record", f"must be a JSON object, got {type(record).__name__}: {record!r:.80}")

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, field: str, message: str) -> None:
        self.problems.append(RecordProblem(file=self.file, index=self.index, field=field, message=message))

    def string(self, key: str) -> str | None:
        """A required non-empty string field."""
        if key not in self.record:
            if self._is_object():
                self.add(key, "missing")
            return None
        value = self.record[key]
        if not isinstance(value, str) or not value.strip():
            self.add(key, f"must be a non-empty string, got {value!r}")
            return None
        return value

    def string_list(self, key: str) -> list[str] | None:
        """A required non-empty list of non-empty strings."""
        if key not in self.record:
            if self._is_object():
                self.add(key, "missing")
            return None
        value = self.record[key]
        if not isinstance(value, list) or not value:
            self.add(key, f"must be a non-empty list of strings, got {value!r}")
            return None
        bad = [i for i, v in enumerate(value) if not isinstance(v, str) or not v.strip()]
        if bad:
            self.add(key, f"entries {bad} are not non-empty strings: {[value[i] for i in bad]!r}")
            return None
        return value

    def integer(self, key: str) -> int | None:
        """A required int field (JSON integers only; not booleans or strings)."""
        if key not in self.record:
            if self._is_object():
                self.add(key, "missing")
            return None
        value = self.record[key]
        if isinstance(value, bool) or not isinstance(value, Integral):
            self.add(key, f"must be an integer, got {value!r}")
            return None
        return int(value)

    def seconds(self, key: str) -> float | None:
        """An optional non-negative number of seconds (absent or null gives ``None``)."""
        value = self.record.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
            self.add(key, f"must be a non-negative number of seconds, got {value!r}")
            return None
        return float(value)

    def build(self, **fields: Any) -> VideoQAExample | None:
        """The example, or ``None`` if this record has problems (including ones the example's own checks find)."""
        if self.problems:
            return None
        try:
            return VideoQAExample(**fields)
        except InvalidExampleError as exc:
            self.add(exc.field, str(exc))
            return None

    def _is_object(self) -> bool:
        return not any(p.field == "record" for p in self.problems)
