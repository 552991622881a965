"""Read one TVBench task file into :class:`VideoQAExample` records.

TVBench (Cores et al., 2024) follows MVBench's format: one JSON file per task, a list of records
``{"video": ..., "question": ..., "candidates": [...], "answer": ..., "start"?: s, "end"?: s}``,
where ``answer`` is a string equal to one of the candidates and ``video`` is relative to that
task's video folder. The information-flow study analyses Action Antonym, Action Sequence, Moving
Direction, Object Count and Scene Transition (docs/methods.md, "Data").

The reference loader silently labels a record whose answer matches no candidate with index -1;
here that record is a problem. A record must have both ``start`` and ``end`` or neither.
"""

from __future__ import annotations

from pathlib import Path

from tl_video.data.examples import VideoQAExample
from tl_video.data.problems import DatasetError, OnError, ReadResult, RecordProblem, check_on_error, finish
from tl_video.data.records import RecordCheck, load_json_file, video_problem

__all__ = ["read_tvbench", "TVBENCH_PAPER_TASKS"]

TVBENCH_PAPER_TASKS = ("action_antonym", "action_sequence", "moving_direction", "object_count", "scene_transition")
"""The TVBench tasks of the information-flow study, as file stems (``action_antonym.json``, ...)."""


def read_tvbench(
    json_path: str | Path,
    video_root: str | Path,
    *,
    task: str | None = None,
    on_error: OnError = "raise",
    check_videos: bool = True,
) -> ReadResult:
    """Read a TVBench task file.

    Args:
        json_path: the task's JSON file (a list of records).
        video_root: the folder the records' ``video`` paths are relative to (the task's video folder).
        task: task name stored on each example; default the file's stem (``"action_sequence"``).
        on_error: ``"raise"`` (default) raises a :class:`DatasetError` listing every bad record;
            ``"skip"`` returns the good ones, with the problems in ``ReadResult.problems``, and warns.
        check_videos: check that every video file exists (turn off to read annotations without videos).

    Returns:
        A :class:`ReadResult`; example ids are ``"{task}/{index:05d}"``, ``source`` is ``"tvbench"``,
        and ``metadata["video_relpath"]`` keeps the record's own ``video`` field.
    """
    check_on_error(on_error)
    json_path = Path(json_path)
    file = str(json_path)
    task = json_path.stem if task is None else task
    data = load_json_file(json_path)
    if not isinstance(data, list):
        raise DatasetError(
            file,
            [RecordProblem(file=file, index=None, field="file", message=f"must be a JSON list of records, got {type(data).__name__}")],
        )

    video_root = Path(video_root)
    examples: list[VideoQAExample] = []
    problems: list[RecordProblem] = []
    for index, record in enumerate(data):
        check = RecordCheck(file, index, record)
        video = check.string("video")
        question = check.string("question")
        candidates = check.string_list("candidates")
        answer = check.string("answer")
        start, end = check.seconds("start"), check.seconds("end")
        if check.ok and (start is None) != (end is None):
            check.add("start" if start is None else "end", "a window needs both 'start' and 'end' (or neither)")

        answer_index = None
        if candidates is not None and answer is not None:
            matches = [i for i, c in enumerate(candidates) if c == answer]
            if not matches:
                check.add("answer", f"{answer!r} is not one of the candidates {candidates!r}")
            elif len(matches) > 1:
                check.add("answer", f"{answer!r} appears {len(matches)} times among the candidates; the answer is ambiguous")
            else:
                answer_index = matches[0]

        video_path = video_root / video if video is not None else None
        if check_videos and video_path is not None:
            problem = video_problem(video_path)
            if problem:
                check.add("video", problem)

        example = check.build(
            example_id=f"{task}/{index:05d}",
            video=str(video_path),
            question=question,
            options=tuple(candidates or ()),
            answer_index=answer_index,
            start=start,
            end=end,
            task=task,
            source="tvbench",
            metadata={"video_relpath": video},
        )
        if example is not None:
            examples.append(example)
        problems.extend(check.problems)
    return finish(file, examples, problems, len(data), on_error)
