"""read_tvbench on small TVBench-format files: good records, and every kind of bad record reported at once."""

from __future__ import annotations

import pytest

from tl_video.data import DatasetError, DatasetWarning, ReadResult, read_tvbench

GOOD = [
    {"video": "a.mp4", "question": "Which direction?", "candidates": ["left", "right"], "answer": "right"},
    {"video": "sub/b.mp4", "question": "What first?", "candidates": ["x", "y", "z"], "answer": "x", "start": 1.0, "end": 3.5},
]


def test_reads_good_records(files):
    root = files.videos("a.mp4", "sub/b.mp4")
    result = read_tvbench(files.json("moving_direction.json", GOOD), root)
    assert isinstance(result, ReadResult) and len(result) == 2 and result.problems == ()
    first, second = result
    assert first.example_id == "moving_direction/00000" and first.task == "moving_direction"
    assert first.source == "tvbench" and first.video == str(root / "a.mp4")
    assert first.options == ("left", "right") and first.answer_index == 1 and first.answer_letter == "B"
    assert (first.start, first.end) == (None, None)
    assert (second.start, second.end) == (1.0, 3.5) and second.answer_text == "x"
    assert second.metadata == {"video_relpath": "sub/b.mp4"}


def test_task_name_override(files):
    root = files.videos("a.mp4", "sub/b.mp4")
    result = read_tvbench(files.json("x.json", GOOD), root, task="Moving Direction")
    assert result[0].task == "Moving Direction"


BAD = GOOD + [
    {"video": "missing.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "a"},  # 2: no video file
    {"video": "a.mp4", "question": "q?", "candidates": ["a", "b"]},  # 3: no answer
    {"video": "a.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "c"},  # 4: answer not a candidate
    {"video": "a.mp4", "question": "q?", "candidates": ["a", "a"], "answer": "a"},  # 5: ambiguous answer
    {"video": "a.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "a", "start": 2.0},  # 6: half a window
    {"video": "a.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "a", "start": 3.0, "end": 1.0},  # 7
    {"video": "a.mp4", "question": "", "candidates": "ab", "answer": "a"},  # 8: two bad fields
    "not a record",  # 9
]


def test_all_problems_are_reported_at_once(files):
    root = files.videos("a.mp4", "sub/b.mp4")
    path = files.json("tasks.json", BAD)
    with pytest.raises(DatasetError) as info:
        read_tvbench(path, root)
    error = info.value
    found = {(p.index, p.field) for p in error.problems}
    assert found == {
        (2, "video"), (3, "answer"), (4, "answer"), (5, "answer"), (6, "end"), (7, "start"),
        (8, "question"), (8, "candidates"), (9, "record"),
    }
    assert all(p.file == str(path) for p in error.problems)
    message = str(error)
    assert f"9 problem(s) in {path} of 10 record(s)" in message
    assert "record 4, field 'answer': 'c' is not one of the candidates ['a', 'b']" in message
    assert "record 2, field 'video': video file not found" in message and "missing.mp4" in message
    assert "on_error='skip' to load the 2 good record(s)" in message


def test_skip_returns_good_records_and_problems(files):
    root = files.videos("a.mp4", "sub/b.mp4")
    with pytest.warns(DatasetWarning, match="skipped 8 of 10 record"):
        result = read_tvbench(files.json("tasks.json", BAD), root, on_error="skip")
    assert [e.example_id for e in result] == ["tasks/00000", "tasks/00001"]
    assert len(result.problems) == 9


def test_wrong_video_root_gets_a_hint(files):
    files.videos("a.mp4", "sub/b.mp4")
    with pytest.raises(DatasetError, match="is video_root right"):
        read_tvbench(files.json("t.json", GOOD), files.root / "elsewhere")


def test_check_videos_off(files):
    result = read_tvbench(files.json("t.json", GOOD), files.root / "not_downloaded", check_videos=False)
    assert len(result) == 2


def test_whole_file_problems(files):
    with pytest.raises(FileNotFoundError, match="dataset file not found"):
        read_tvbench(files.root / "none.json", files.root)
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_tvbench(files.text("broken.json", '[{"video": '), files.root)
    with pytest.raises(DatasetError, match="must be a JSON list of records, got dict"):
        read_tvbench(files.json("dict.json", {"0": GOOD[0]}), files.root)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        read_tvbench(files.json("t.json", GOOD), files.root, on_error="ignore")
