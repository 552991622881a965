"""`--data`: the format is detected from a file or a dataset folder; tasks and the first n per task are kept."""

from __future__ import annotations

import json

import pytest

from tl_video.analyses.study_data import load_examples


def tvbench_folder(root):
    """A TVBench-shaped folder: json/<task>.json and video/<task>/<file>."""
    for task in ("moving_direction", "object_count", "action_sequence"):
        records = [{"video": f"{i}.mp4", "question": f"{task} {i}?", "candidates": ["a", "b"], "answer": "b"} for i in range(3)]
        (root / "json").mkdir(parents=True, exist_ok=True)
        (root / "json" / f"{task}.json").write_text(json.dumps(records))
        (root / "video" / task).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / "video" / task / f"{i}.mp4").touch()
    (root / "json" / "unexpected_action.json").write_text("[]")  # not a paper task: not read by default
    return root


def test_tvbench_folder_reads_the_paper_tasks_with_n_per_task(tmp_path):
    data = load_examples(tvbench_folder(tmp_path / "TVBench"), n=2)
    assert data.source == "tvbench" and data.counts() == {"action_sequence": 2, "moving_direction": 2, "object_count": 2}
    assert data.examples[0].video.endswith("TVBench/video/action_sequence/0.mp4")
    assert "tvbench:" in data.name and "n=2" in data.name
    chosen = load_examples(tmp_path / "TVBench", tasks=["object_count"])
    assert chosen.counts() == {"object_count": 3}
    with pytest.raises(ValueError, match=r"--tasks: no TVBench file json/juggling.json .*tasks there: action_sequence"):
        load_examples(tmp_path / "TVBench", tasks=["juggling"])


def test_tvbench_file_needs_its_video_folder(tmp_path):
    root = tvbench_folder(tmp_path / "TVBench")
    with pytest.raises(ValueError, match="a TVBench task file needs --video-root"):
        load_examples(root / "json" / "object_count.json")
    data = load_examples(root / "json" / "object_count.json", video_root=root / "video" / "object_count")
    assert data.source == "tvbench" and len(data.examples) == 3


def test_tomato_folder_and_jsonl_are_detected(tmp_path, study_benchmark_dir):
    tomato = tmp_path / "TOMATO"
    (tomato / "data").mkdir(parents=True)
    (tomato / "videos" / "human").mkdir(parents=True)
    (tomato / "videos" / "human" / "k1.mp4").touch()
    record = {"key": "k1", "demonstration_type": "human", "question": "How many?", "options": ["1", "2"], "answer": 1}
    (tomato / "data" / "count.json").write_text(json.dumps({"0": record}))
    data = load_examples(tomato)
    assert data.source == "tomato" and data.counts() == {"count": 1}
    assert load_examples(study_benchmark_dir).source == "jsonl"
    assert load_examples(study_benchmark_dir / "examples.jsonl", n=1).counts() == dict.fromkeys(
        ["moving_direction", "action_sequence", "object_count", "scene_transition", "antonym"], 1)


def test_unrecognised_data_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="a folder with neither examples.jsonl, json/ .TVBench. nor data/ . videos/ .TOMATO."):
        load_examples(tmp_path / "empty")
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"id": 1}]))
    with pytest.raises(ValueError, match="neither TVBench .records with 'candidates'. nor TOMATO"):
        load_examples(other)
    with pytest.raises(ValueError, match="--n 0: give a positive number"):
        load_examples(other, n=0)
