"""Annotation files that are not UTF-8, nest too deeply or carry a BOM: a problem naming file and line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_video.data import DatasetError, read_jsonl, read_tomato, read_tvbench
from tl_video.data.records import JsonTextError, decode_json

RECORD = {"example_id": "a", "video": "a.mp4", "question": "Which?", "options": ["x", "y"], "answer_index": 0}


def read_any(kind, path):
    if kind == "tvbench":
        return read_tvbench(path, path.parent, check_videos=False)
    return read_tomato(path, path.parent, check_videos=False)


@pytest.mark.parametrize("kind", ["tvbench", "tomato"])
def test_benchmark_file_not_utf8_names_file_and_line(tmp_path, kind):
    path = tmp_path / f"{kind}.json"
    path.write_bytes(b'[\n  {"video": "a.mp4",\n   "question": "caf\xe9?"}\n]')  # Latin-1, not UTF-8
    with pytest.raises(DatasetError, match=rf"(?s){path.name}.*not UTF-8 text: byte 0xe9 at line 3, column 20; re-save"):
        read_any(kind, path)


@pytest.mark.parametrize("kind", ["tvbench", "tomato"])
def test_benchmark_file_nested_too_deeply_names_line(tmp_path, kind):
    path = tmp_path / f"{kind}.json"
    path.write_text("[\n" + "[" * 50_000 + "]" * 50_000 + "\n]")
    with pytest.raises(DatasetError, match=r"nested more than 500 levels deep at line 2, column 500"):
        read_any(kind, path)


def test_jsonl_bad_lines_are_per_line_problems(tmp_path):
    good = json.dumps(RECORD).encode()
    other = json.dumps(RECORD | {"example_id": "b"}).encode()
    path = tmp_path / "set.jsonl"
    path.write_bytes(good + b"\n" + b'{"question": "\xff"}\n' + b"[" * 50_000 + b"\n" + other + b"\n")
    with pytest.raises(DatasetError) as raised:
        read_jsonl(path, check_videos=False)
    found = {(p.index, p.field): p.message for p in raised.value.problems}
    assert set(found) == {(1, "json"), (2, "json")}
    assert "not UTF-8 text: byte 0xff at line 2, column 15" in found[(1, "json")]
    assert "nested more than 500 levels deep at line 3" in found[(2, "json")]
    with pytest.warns(UserWarning):
        assert [e.example_id for e in read_jsonl(path, check_videos=False, on_error="skip")] == ["a", "b"]


def test_utf8_bom_is_read(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECORD).encode() + b"\n")
    assert read_jsonl(path, check_videos=False)[0].example_id == "a"
    bench = tmp_path / "t.json"
    bench.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"video": "v.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "a"}]).encode())
    assert len(read_tvbench(bench, tmp_path, check_videos=False)) == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_property_any_bytes_parse_or_raise_one_line_naming_a_line(raw):
    try:
        decode_json(raw)
    except JsonTextError as error:
        assert "\n" not in str(error) and " at line " in str(error)


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.integers() | st.text(max_size=5), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3)))
def test_property_valid_json_round_trips(value):
    assert decode_json(json.dumps(value).encode()) == value


@pytest.mark.parametrize(
    "options, message",
    [
        ({"A": "left", "B": "right"}, "got a dict .*keep only its keys"),
        ({"left", "right"}, "got a set"),
        (("left", "left "), r"the answer 'left' appears as options \[0, 1\], so its letter is ambiguous"),
    ],
)
def test_example_options_that_would_silently_change_meaning(options, message):
    from tl_video.data import InvalidExampleError, VideoQAExample

    with pytest.raises(InvalidExampleError, match=message):
        VideoQAExample(example_id="a", video="v.mp4", question="Which way?", options=options, answer_index=0)


def test_example_options_from_a_generator_keep_their_order():
    from tl_video.data import VideoQAExample

    example = VideoQAExample(example_id="a", video="v.mp4", question="Q?", options=(o for o in ["x", "y"]), answer_index=1)
    assert example.options == ("x", "y") and example.answer_index == 1


@pytest.mark.parametrize("reader", ["jsonl", "tvbench"])
def test_dataset_path_that_is_a_folder(tmp_path, reader):
    with pytest.raises(IsADirectoryError, match="is a folder; pass the annotation file inside it"):
        read_jsonl(tmp_path) if reader == "jsonl" else read_tvbench(tmp_path, tmp_path)


def test_synthetic_benchmark_cli_out_is_a_file(tmp_path, capsys):
    from tl_video.data.synthetic import main

    existing = tmp_path / "taken"
    existing.write_text("")
    assert main(["--out", str(existing), "--n-per-task", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m tl_video.data.synthetic: error:") and "taken" in err[0]


def test_synthetic_benchmark_tasks_as_a_string(tmp_path):
    from tl_video.data import generate_benchmark

    with pytest.raises(ValueError, match="tasks must be a list of task names, got the string"):
        generate_benchmark(tmp_path, 1, tasks="direction")
