"""VideoQAExample: answer properties, JSON round trip, and validation naming the field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tl_video.data import InvalidExampleError, VideoQAExample


def example(**overrides) -> VideoQAExample:
    fields = {
        "example_id": "seq/0001",
        "video": "videos/a.mp4",
        "question": "What happens first?",
        "options": ("opens the door", "sits down", "drinks", "runs", "waves"),
        "answer_index": 4,
        "start": 1.5,
        "end": 4.0,
        "task": "action_sequence",
        "source": "tvbench",
        "metadata": {"note": "x", "nested": [1, {"a": 2}]},
    }
    return VideoQAExample(**(fields | overrides))


def test_answer_properties():
    ex = example()
    assert ex.is_multiple_choice
    assert ex.answer_text == "waves" and ex.answer_letter == "E"
    assert ex.option_letters == ("A", "B", "C", "D", "E")


def test_open_ended():
    ex = example(options=(), answer_index=None)
    assert not ex.is_multiple_choice
    assert ex.answer_text is None and ex.answer_letter is None and ex.option_letters == ()


def test_json_round_trip():
    ex = example()
    data = json.loads(json.dumps(ex.to_json()))
    assert data["options"] == list(ex.options)
    assert VideoQAExample.from_json(data) == ex


def test_minimal_record_round_trip():
    ex = VideoQAExample(example_id="a", video="v.mp4", question="q?")
    assert VideoQAExample.from_json(ex.to_json()) == ex
    assert ex.options == () and ex.metadata == {}


def test_frozen_keyword_only_and_lists_become_tuples():
    ex = example(options=["x", "y"], answer_index=1)
    assert ex.options == ("x", "y")
    hash(ex)  # hashable despite the metadata dict
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.question = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        VideoQAExample("a", "v.mp4", "q?")  # type: ignore[misc]


def test_metadata_is_copied():
    metadata = {"k": 1}
    ex = example(metadata=metadata)
    metadata["k"] = 2
    assert ex.metadata == {"k": 1}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"answer_index": 5}, "answer_index", r"answer_index=5 is out of range for 5 options \(valid 0..4\)"),
        ({"answer_index": -1}, "answer_index", "out of range"),
        ({"answer_index": True}, "answer_index", "must be an int or None"),
        ({"options": (), "answer_index": 0}, "answer_index", "there are no options"),
        ({"options": ("a", "")}, "options", r"options \[1\] are not non-empty strings"),
        ({"options": "abc"}, "options", "must be a list of strings"),
        ({"options": tuple("x" * i for i in range(1, 28)), "answer_index": 0}, "options", "at most 26"),
        ({"question": ""}, "question", "question must be a non-empty string"),
        ({"video": None}, "video", "video must be a non-empty string"),
        ({"example_id": 3}, "example_id", "example_id must be a non-empty string"),
        ({"task": 3}, "task", "task must be a string or None"),
        ({"start": 4.0, "end": 4.0}, "start", "start=4.0 s is not before end=4.0 s"),
        ({"start": -1.0}, "start", "non-negative number of seconds"),
        ({"end": float("nan")}, "end", "non-negative number of seconds"),
        ({"metadata": {"x": {1, 2}}}, "metadata", "not JSON-serialisable"),
        ({"metadata": [1]}, "metadata", "metadata must be a dict"),
    ],
)
def test_invalid_fields_raise_naming_the_field(overrides, field, message):
    with pytest.raises(InvalidExampleError, match=message) as info:
        example(**overrides)
    assert info.value.field == field
    assert "seq/0001" in str(info.value) or field == "example_id"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"example_id": "a", "video": "v", "question": "q", "answer": 1}, r"unknown VideoQAExample field\(s\) \['answer'\]; valid fields"),
        ({"example_id": "a", "video": "v"}, r"missing required field\(s\) \['question'\]"),
        (["a"], "must be a JSON object"),
    ],
)
def test_from_json_rejects_bad_records(data, message):
    with pytest.raises(InvalidExampleError, match=message):
        VideoQAExample.from_json(data)
