"""Read one TOMATO reasoning-type file into :class:`VideoQAExample` records.

TOMATO (Shangguan et al., 2024) ships one JSON file per reasoning type (``count.json``,
``direction.json``, ``rotation.json``, ...). Each is an object mapping a record id to
``{"key": ..., "demonstration_type": ..., "question": ..., "options": [...], "answer": <index>, ...}``
(a plain list of such records is accepted too). ``answer`` is an index into ``options``.

Video location (an assumption, stated because TOMATO records carry no path): the video of a record
is ``{video_root}/{demonstration_type}/{key}.mp4`` — the layout of TOMATO's release
(``videos/human/0209-03.mp4``) used by its evaluation code — or, if that file does not exist,
``{video_root}/{key}.mp4`` for a flattened copy. A record whose video is at neither place is a
problem naming both paths.
"""

from __future__ import annotations

from pathlib import Path

from tl_video.data.examples import VideoQAExample
from tl_video.data.problems import DatasetError, OnError, ReadResult, RecordProblem, check_on_error, finish
from tl_video.data.records import RecordCheck, load_json_file

__all__ = ["read_tomato", "tomato_video_candidates"]

_KNOWN_FIELDS = ("key", "demonstration_type", "question", "options", "answer")


def tomato_video_candidates(video_root: str | Path, key: str, demonstration_type: str) -> tuple[Path, Path]:
    """Where a TOMATO video may be, in the order tried: ``root/demonstration_type/key.mp4``, ``root/key.mp4``."""
    root = Path(video_root)
    return root / demonstration_type / f"{key}.mp4", root / f"{key}.mp4"


def read_tomato(
    json_path: str | Path,
    video_root: str | Path,
    *,
    task: str | None = None,
    on_error: OnError = "raise",
    check_videos: bool = True,
) -> ReadResult:
    """Read a TOMATO file.

    Args:
        json_path: a reasoning-type file, e.g. ``data/count.json``.
        video_root: the ``videos`` folder (holding ``human/``, ``object/``, ``simulated/``).
        task: task name stored on each example; default the file's stem (``"count"``).
        on_error: ``"raise"`` (default) raises a :class:`DatasetError` listing every bad record;
            ``"skip"`` returns the good ones, with the problems in ``ReadResult.problems``, and warns.
        check_videos: look for every video (see the module docstring for where); when off, the
            first candidate path is used unchecked.

    Returns:
        A :class:`ReadResult`; example ids are ``"{task}/{record id}"``, ``source`` is ``"tomato"``,
        and ``metadata`` holds the record's other fields (``demonstration_type``, ``key``,
        ``motion_type``, ``variation``, ...) and its ``record_id``.
    """
    check_on_error(on_error)
    json_path = Path(json_path)
    file = str(json_path)
    task = json_path.stem if task is None else task
    data = load_json_file(json_path)
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = [(str(i), record) for i, record in enumerate(data)]
    else:
        raise DatasetError(
            file,
            [RecordProblem(file=file, index=None, field="file", message=f"must be a JSON object of records (or a list), got {type(data).__name__}")],
        )

    examples: list[VideoQAExample] = []
    problems: list[RecordProblem] = []
    for index, (record_id, record) in enumerate(items):
        check = RecordCheck(file, index, record)
        key = check.string("key")
        demonstration_type = check.string("demonstration_type")
        question = check.string("question")
        options = check.string_list("options")
        answer = check.integer("answer")
        if options is not None and answer is not None and not 0 <= answer < len(options):
            check.add("answer", f"index {answer} is out of range for {len(options)} options (valid 0..{len(options) - 1})")

        video = None
        if key is not None and demonstration_type is not None:
            candidates = tomato_video_candidates(video_root, key, demonstration_type)
            video = next((p for p in candidates if p.is_file()), None) if check_videos else candidates[0]
            if video is None:
                check.add("video", f"video for key {key!r} not found at {str(candidates[0])!r} or {str(candidates[1])!r}")

        metadata = {k: v for k, v in check.record.items() if k not in _KNOWN_FIELDS}
        metadata.update(record_id=record_id, key=key, demonstration_type=demonstration_type)
        example = check.build(
            example_id=f"{task}/{record_id}",
            video=str(video),
            question=question,
            options=tuple(options or ()),
            answer_index=answer,
            task=task,
            source="tomato",
            metadata=metadata,
        )
        if example is not None:
            examples.append(example)
        problems.extend(check.problems)
    return finish(file, examples, problems, len(items), on_error)
