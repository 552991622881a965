"""Our JSONL format: round trip, relative video paths, and per-line problems."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tl_video.data import DatasetError, DatasetWarning, VideoQAExample, read_jsonl, write_jsonl
from tl_video.video import read_video, write_video


def make(example_id: str, video: str, **overrides) -> VideoQAExample:
    fields = {"example_id": example_id, "video": video, "question": "q?", "options": ("a", "b"), "answer_index": 0}
    return VideoQAExample(**(fields | overrides))


def test_round_trip_with_relative_paths(files, tmp_path):
    files.videos("one.mp4", "two.mp4")
    examples = [
        make("1", str(tmp_path / "videos" / "one.mp4"), start=0.5, end=1.0, metadata={"k": [1, 2]}),
        make("2", str(tmp_path / "videos" / "two.mp4"), options=(), answer_index=None),
    ]
    path = write_jsonl(tmp_path / "set.jsonl", examples, relative_to=tmp_path)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["video"] == "videos/one.mp4"  # relocatable
    assert read_jsonl(path).examples == tuple(examples)


def test_video_root_and_absolute_paths(files, tmp_path):
    elsewhere = files.videos("x.mp4", folder="elsewhere")
    path = files.text(
        "d.jsonl",
        json.dumps(make("rel", "x.mp4").to_json()) + "\n\n" + json.dumps(make("abs", str(elsewhere / "x.mp4")).to_json()) + "\n",
    )
    result = read_jsonl(path, video_root=elsewhere)
    assert [e.video for e in result] == [str(elsewhere / "x.mp4")] * 2


def test_every_bad_line_is_reported(files):
    files.videos("v.mp4")
    good = make("g", "videos/v.mp4").to_json()
    lines = [
        json.dumps(good),  # 0
        "{not json",  # 1
        json.dumps(good | {"example_id": "m", "video": "videos/missing.mp4"}),  # 2
        json.dumps(good | {"example_id": "n", "answer_index": None}),  # 3: multiple choice without answer
        json.dumps(good | {"example_id": "o", "answer_index": 7}),  # 4
        json.dumps(good | {"example_id": "p", "colour": "red"}),  # 5: unknown field
        json.dumps(good),  # 6: duplicate id
        json.dumps([1, 2]),  # 7
    ]
    path = files.text("d.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as info:
        read_jsonl(path)
    found = {(p.index, p.field) for p in info.value.problems}
    assert found == {(1, "json"), (2, "video"), (3, "answer_index"), (4, "answer_index"), (5, "colour"), (6, "example_id"), (7, "record")}
    assert "'g' repeats the id of line 0" in str(info.value)

    with pytest.warns(DatasetWarning, match="skipped 7 of 8"):
        result = read_jsonl(path, on_error="skip")
    assert [e.example_id for e in result] == ["g"]


def test_unlabelled_sets_can_be_read(files):
    files.videos("v.mp4")
    path = files.text("d.jsonl", json.dumps(make("u", "videos/v.mp4", answer_index=None).to_json()) + "\n")
    assert read_jsonl(path, require_answers=False)[0].answer_index is None


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset file not found"):
        read_jsonl(tmp_path / "none.jsonl")


def test_write_rejects_other_records(tmp_path):
    with pytest.raises(TypeError, match="writes VideoQAExample records"):
        write_jsonl(tmp_path / "x.jsonl", [{"example_id": "a"}])


def test_end_to_end_with_a_real_video(tmp_path):
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "clip.mp4", np.full((16, 32, 32, 3), 90, np.uint8), 8.0)
    write_jsonl(tmp_path / "set.jsonl", [make("clip", "videos/clip.mp4", start=0.5, end=1.5)])
    (example,) = read_jsonl(tmp_path / "set.jsonl")
    video = read_video(example.video, num_frames=4, start=example.start, end=example.end)
    assert video.frame_indices.tolist() == [5, 7, 9, 11] and video.frames.shape == (4, 32, 32, 3)
