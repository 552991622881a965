"""Our own dataset format: JSON Lines, one :meth:`VideoQAExample.to_json` object per line.

Any benchmark can be converted once into this format and then read like the others. Relative
``video`` paths are resolved against ``video_root`` (default: the JSONL file's folder), so a
dataset folder holding ``examples.jsonl`` and ``videos/`` can be moved as a whole; absolute paths
are kept. Blank lines are ignored; line indices in problems are 0-based.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from tl_video.data.examples import InvalidExampleError, VideoQAExample
from tl_video.data.problems import DatasetError, OnError, ReadResult, RecordProblem, check_on_error, finish
from tl_video.data.records import JsonTextError, decode_json, video_problem

__all__ = ["read_jsonl", "write_jsonl"]


def read_jsonl(
    path: str | Path,
    *,
    video_root: str | Path | None = None,
    on_error: OnError = "raise",
    check_videos: bool = True,
    require_answers: bool = True,
) -> ReadResult:
    """Read a JSONL file of :class:`VideoQAExample` records.

    Args:
        path: the ``.jsonl`` file.
        video_root: folder that relative ``video`` paths are relative to; default the file's folder.
        on_error: ``"raise"`` (default) raises a :class:`DatasetError` listing every bad line;
            ``"skip"`` returns the good ones, with the problems in ``ReadResult.problems``, and warns.
        check_videos: check that every video file exists.
        require_answers: a multiple-choice record without ``answer_index`` is a problem (analyses
            need labels); turn off for unlabelled sets.

    Returns:
        A :class:`ReadResult` whose examples have resolved video paths.
    """
    check_on_error(on_error)
    path = Path(path)
    file = str(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(f"dataset path {file!r} is a folder; pass the annotation file inside it (e.g. a .json or .jsonl file).")
        raise FileNotFoundError(f"dataset file not found: {file!r} (resolved: {path.absolute()}).")
    root = path.parent if video_root is None else Path(video_root)

    examples: list[VideoQAExample] = []
    problems: list[RecordProblem] = []
    seen: dict[str, int] = {}
    total = 0
    with path.open("rb") as lines:  # bytes, so one line that is not UTF-8 is one problem, not a crash
        for index, raw in enumerate(lines):
            if not raw.strip():
                continue
            total += 1
            here: list[RecordProblem] = []

            def add(field: str, message: str, index: int = index, here: list[RecordProblem] = here) -> None:
                here.append(RecordProblem(file=file, index=index, field=field, message=message))

            try:
                data = decode_json(raw, first_line=index + 1)
            except JsonTextError as exc:
                add("json", f"{exc}: {raw.strip()[:80]!r}")
                problems.extend(here)
                continue
            try:
                example = VideoQAExample.from_json(data)
            except InvalidExampleError as exc:
                add(exc.field, str(exc))
                problems.extend(here)
                continue

            video = Path(example.video)
            if not video.is_absolute():
                video = root / video
            if check_videos and (problem := video_problem(video)):
                add("video", problem)
            if require_answers and example.is_multiple_choice and example.answer_index is None:
                add("answer_index", "missing: a multiple-choice example needs its answer (or pass require_answers=False)")
            if example.example_id in seen:
                add("example_id", f"{example.example_id!r} repeats the id of line {seen[example.example_id]}")
            else:
                seen[example.example_id] = index
            if here:
                problems.extend(here)
            else:
                examples.append(_with_video(example, str(video)))
    if total == 0:
        problems.append(RecordProblem(file=file, index=None, field="file",
                                      message="the file is empty: it holds no records (an interrupted download or copy?)"))
        raise DatasetError(file, problems)
    return finish(file, examples, problems, total, on_error)


def write_jsonl(
    path: str | Path,
    examples: Iterable[VideoQAExample],
    *,
    relative_to: str | Path | None = None,
) -> Path:
    """Write examples as JSON Lines (UTF-8, one object per line, fields in declaration order).

    With ``relative_to``, video paths under that folder are written relative to it (pass the JSONL
    file's folder to make the dataset relocatable). Returns the path.
    """
    path = Path(path)
    base = None if relative_to is None else Path(relative_to).absolute()
    with path.open("w", encoding="utf-8") as out:
        for example in examples:
            if not isinstance(example, VideoQAExample):
                raise TypeError(f"write_jsonl writes VideoQAExample records, got {type(example).__name__}.")
            record = example.to_json()
            if base is not None:
                video = Path(example.video).absolute()
                if video.is_relative_to(base):
                    record["video"] = video.relative_to(base).as_posix()
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _with_video(example: VideoQAExample, video: str) -> VideoQAExample:
    return example if example.video == video else replace(example, video=video)
