"""read_tomato on small TOMATO-format files: id-keyed records, video lookup by key, bad records."""

from __future__ import annotations

import pytest

from tl_video.data import DatasetError, DatasetWarning, read_tomato, tomato_video_candidates


def record(key: str, demonstration_type: str = "human", answer: object = 2, **extra) -> dict:
    return {
        "question": "How many circles does the person draw?",
        "options": ["2", "1", "3", "4", "5", "0"],
        "answer": answer,
        "key": key,
        "video_source_url": "",
        "motion_type": "count",
        "variation": {"zoom": 1},
        "demonstration_type": demonstration_type,
        "note": "drawing",
    } | extra


def test_reads_records_and_finds_videos_by_demonstration_type_and_key(files):
    root = files.videos("human/0209-03.mp4", "0001-00.mp4")  # nested layout, and a flat copy
    path = files.json("count.json", {"0": record("0209-03"), "7": record("0001-00", "simulated", answer=5)})
    first, second = read_tomato(path, root)

    assert first.example_id == "count/0" and first.task == "count" and first.source == "tomato"
    assert first.video == str(root / "human" / "0209-03.mp4")
    assert first.answer_index == 2 and first.answer_text == "3" and first.answer_letter == "C"
    assert first.options == ("2", "1", "3", "4", "5", "0")
    assert first.metadata["motion_type"] == "count" and first.metadata["variation"] == {"zoom": 1}
    assert first.metadata["demonstration_type"] == "human" and first.metadata["record_id"] == "0"
    assert second.example_id == "count/7" and second.video == str(root / "0001-00.mp4")
    assert second.answer_letter == "F"


def test_video_candidates(files):
    nested, flat = tomato_video_candidates(files.root, "k", "object")
    assert nested == files.root / "object" / "k.mp4" and flat == files.root / "k.mp4"


def test_list_top_level_is_accepted(files):
    root = files.videos("human/a.mp4")
    assert [e.example_id for e in read_tomato(files.json("direction.json", [record("a")]), root)] == ["direction/0"]


def test_bad_records_are_reported_together(files):
    root = files.videos("human/ok.mp4")
    path = files.json(
        "count.json",
        {
            "0": record("ok"),
            "1": record("gone"),  # video at neither place
            "2": record("ok", answer=6),  # out of range
            "3": record("ok", answer="2"),  # a string, not an index
            "4": {k: v for k, v in record("ok").items() if k != "answer"},  # missing answer
            "5": record("ok", options=[]),  # no options
            "6": {k: v for k, v in record("ok").items() if k != "key"},  # no key: no video either
        },
    )
    with pytest.raises(DatasetError) as info:
        read_tomato(path, root)
    found = {(p.index, p.field) for p in info.value.problems}
    assert found == {(1, "video"), (2, "answer"), (3, "answer"), (4, "answer"), (5, "options"), (6, "key")}
    message = str(info.value)
    assert "index 6 is out of range for 6 options (valid 0..5)" in message
    assert "human/gone.mp4" in message and "gone.mp4' or" in message
    assert "record 4, field 'answer': missing" in message

    with pytest.warns(DatasetWarning):
        result = read_tomato(path, root, on_error="skip")
    assert [e.example_id for e in result] == ["count/0"] and len(result.problems) == 6


def test_not_an_object(files):
    with pytest.raises(DatasetError, match="must be a JSON object of records"):
        read_tomato(files.json("x.json", "text"), files.root)
