"""Result records on disk: one JSONL file per analysis, written as results are produced.

Each file opens with a header line (package version, model id and config hash, dataset, the
analysis options as JSON, seed) and then holds one record per (example x configuration), each a
JSON object with a unique ``key``. Records are appended with one ``os.write`` of whole lines (all
of an example's records at once with `RecordSink.append_many`) and an ``fsync``, so a crash loses
at most the lines being written; a torn last line (or a torn header, when nothing else was
written) is dropped on resume, and every key not on disk is computed again. A write that fails
(a full disk) raises `RecordWriteError` naming the file; the lines before it stay intact.
``resume=True`` keeps what is on disk (the header must match: same model, data and options) and
lets the pipeline skip every key already written.

    >>> sink = RecordSink.open("run/flow.jsonl", header, resume=True)   # doctest: +SKIP
    >>> if not sink.has(key): sink.append({"key": key, ...})             # doctest: +SKIP
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

HEADER_FIELDS_THAT_MUST_MATCH = ("analysis", "model_id", "model_config_hash", "dataset", "options", "seed")


# Config fields that say where the model runs, not what it computes: a run resumed on another GPU (a
# requeued job, another torchrun rank) or split over devices is the same run.
_PLACEMENT_FIELDS = ("device",)


def config_hash(config: Any) -> str:
    """A short stable hash of a model config (every dataclass field but the device, as JSON)."""
    fields = asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config)
    fields = {name: value for name, value in fields.items() if name not in _PLACEMENT_FIELDS}
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class RunHeader:
    """What every record file says about how its records were made."""

    analysis: str
    model_id: str
    model_config_hash: str
    dataset: str
    options: dict[str, Any]
    seed: int
    tl_video_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # informative only (timings, command): not compared on resume

    def __post_init__(self) -> None:
        if not self.tl_video_version:
            from tl_video import __version__

            object.__setattr__(self, "tl_video_version", __version__)

    @classmethod
    def for_model(cls, model: Any, *, analysis: str, dataset: str, options: dict[str, Any], seed: int, **extra: Any) -> "RunHeader":
        return cls(
            analysis=analysis, model_id=model.cfg.model_name, model_config_hash=config_hash(model.cfg),
            dataset=dataset, options=json.loads(json.dumps(options, default=str)), seed=int(seed), extra=extra,
        )

    def to_json(self) -> dict[str, Any]:
        return {"type": "header"} | asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "header") -> "RunHeader":
        if not isinstance(data, dict) or data.get("type") != "header":
            raise ValueError(f"{where}: the first line is not a tl_video record header; is this a tl_video record file?")
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def mismatch(self, other: "RunHeader") -> str | None:
        """The first field (of those that define a run) in which two headers differ, described."""
        for name in HEADER_FIELDS_THAT_MUST_MATCH:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                why = (" (the model computes differently: another checkpoint, --dtype or attention implementation; "
                       "resume with the run's own)") if name == "model_config_hash" else ""
                return f"{name}: on disk {theirs!r}, now {mine!r}{why}"
        return None


class RecordSink:
    """Appends records to a JSONL file (or keeps them in memory when ``path`` is None)."""

    def __init__(self, path: Path | None, header: RunHeader, records: list[dict[str, Any]]):
        self.path = path
        self.header = header
        self.records = records
        self._by_key = {record["key"]: record for record in records}
        self._resumed = set(self._by_key)
        self.n_resumed = len(records)

    @classmethod
    def open(cls, path: str | Path | None, header: RunHeader, *, resume: bool = False) -> "RecordSink":
        """Start a record file, or continue one (``resume``) whose header matches ``header``."""
        if path is None:
            return cls(None, header, [])
        path = Path(path)
        if resume and _only_a_torn_header(path):
            path.unlink()  # the crash came while the header was written: nothing to keep
        if path.exists() and path.stat().st_size > 0:
            if not resume:
                raise FileExistsError(
                    f"{path} already holds results; pass resume=True (--resume) to continue that run, "
                    "or choose another output folder"
                )
            on_disk, records = read_records(path, drop_torn_tail=True)
            problem = header.mismatch(on_disk)
            if problem:
                raise ValueError(
                    f"cannot resume {path}: it was written by a different run ({problem}); "
                    "use another output folder or the same options"
                )
            _rewrite_if_torn(path, on_disk, records)
            return cls(path, on_disk, records)
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = cls(path, header, [])
        sink._append_line(header.to_json())
        return sink

    def has(self, key: str) -> bool:
        return key in self._by_key

    def written_now(self, key: str) -> bool:
        """Whether ``key`` was written by this run (not kept from disk on resume): a repeat is a duplicated id."""
        return key in self._by_key and key not in self._resumed

    def get(self, key: str) -> dict[str, Any] | None:
        """The record written under ``key``, or None."""
        return self._by_key.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record (it must carry a unique ``key``) and make it durable."""
        self.append_many([record])

    def append_many(self, records: Sequence[dict[str, Any]]) -> None:
        """Write several records (e.g. all of one example's) in one write, then make them durable.

        Every key is checked before anything is written, so a bad record writes none of them.
        """
        keys: set[str] = set()
        for record in records:
            key = record.get("key")
            if not isinstance(key, str):
                raise ValueError(f"a record needs a string 'key', got {key!r}")
            if key in self._by_key or key in keys:
                raise ValueError(f"record {key!r} was already written")
            keys.add(key)
        records = [{"type": "record"} | record for record in records]
        if self.path is not None and records:
            self._append_lines(records)
        for record in records:
            self.records.append(record)
            self._by_key[record["key"]] = record

    def _append_line(self, obj: dict[str, Any]) -> None:
        self._append_lines([obj])

    def _append_lines(self, objs: Sequence[dict[str, Any]]) -> None:
        """One ``os.write`` loop of whole lines on an append-only descriptor, then ``fsync``."""
        data = "".join(json.dumps(obj, allow_nan=True, default=_json_default) + "\n" for obj in objs).encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise RecordWriteError(self.path, error) from error


class RecordWriteError(OSError):
    """Records could not be written (e.g. the disk is full); what was written before is intact."""

    exit_code = 2  # the command line prints the message as its one error line

    def __init__(self, path: Path, error: OSError):
        reason = "the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else (error.strerror or str(error))
        super().__init__(
            error.errno,
            f"cannot write records to {path}: {reason}; the records written before are intact: "
            "free space (or choose another --out) and rerun with --resume to continue",
        )
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def read_records(path: str | Path, *, drop_torn_tail: bool = False) -> tuple[RunHeader, list[dict[str, Any]]]:
    """The header and records of one record file; a torn last line is an error unless dropped."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}: empty record file")
    header = RunHeader.from_json(_parse(lines[0], path, 1), f"{path}:1")
    records = []
    body = [(number, line) for number, line in enumerate(lines[1:], start=2) if line.strip()]
    for index, (number, line) in enumerate(body):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if drop_torn_tail and index == len(body) - 1:
                break
            raise ValueError(f"{path}:{number}: not a complete JSON record (a torn write?); resume to repair it") from None
    return header, records


def read_analysis(out_dir: str | Path, analysis: str) -> tuple[RunHeader, list[dict[str, Any]]]:
    """The header and records of ``<out_dir>/<analysis>.jsonl``, checking the file holds that analysis."""
    path = Path(out_dir) / f"{analysis}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no {analysis} records at {path}; run that analysis into {out_dir} first")
    header, records = read_records(path)
    if header.analysis != analysis:
        raise ValueError(f"{path} holds {header.analysis!r} records, not {analysis!r}")
    return header, records


@dataclass(frozen=True)
class RecordedResult:
    """Base of every pipeline's result: the header and records of its file, read back with `read`."""

    header: RunHeader
    records: list[dict[str, Any]]

    ANALYSIS: ClassVar[str] = ""  # the record file's name: <out_dir>/<ANALYSIS>.jsonl

    @classmethod
    def read(cls, out_dir: str | Path):
        """Read ``<out_dir>/<ANALYSIS>.jsonl`` back."""
        return cls(*read_analysis(out_dir, cls.ANALYSIS))

    @property
    def seed(self) -> int:
        return self.header.seed


def read_run(run_dir: str | Path) -> dict[str, tuple[RunHeader, list[dict[str, Any]]]]:
    """Every record file of a run folder: ``{analysis: (header, records)}``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    out = {}
    for path in sorted(run_dir.glob("*.jsonl")):
        header, records = read_records(path)
        out[header.analysis] = (header, records)
    return out


def iter_values(records: list[dict[str, Any]], **where: Any) -> Iterator[dict[str, Any]]:
    """Records whose fields equal every ``where`` item."""
    for record in records:
        if all(record.get(name) == value for name, value in where.items()):
            yield record


def _only_a_torn_header(path: Path) -> bool:
    """True when the file holds a single line, not ending in a newline, that is not valid JSON."""
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    if "\n" in text.rstrip("\n") or text.endswith("\n") or not text.strip():
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return True
    return False


def _rewrite_if_torn(path: Path, header: RunHeader, records: list[dict[str, Any]]) -> None:
    text = path.read_text(encoding="utf-8")
    if text.endswith("\n") and text.count("\n") == len(records) + 1:
        return
    write_records_atomically(path, header, records)


def write_records_atomically(path: Path, header: RunHeader, records: Sequence[Mapping[str, Any]]) -> None:
    """A complete record file (header, then records), written beside and renamed into place, so it is
    never seen half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for obj in [header.to_json(), *records]:
            handle.write(json.dumps(obj, default=_json_default) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _parse(line: str, path: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"cannot write {type(value).__name__} to a record")
