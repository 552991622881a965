"""The synthetic benchmark: determinism, balance, and ground truth recoverable from the decoded mp4.

The oracles below answer each task from decoded pixels alone (colours, centroids, areas), forward
and reversed, and must agree with ``answer_index`` and ``metadata["reversed_answer_index"]``.
"""

from __future__ import annotations

import re
import runpy
import sys
from collections import Counter

import numpy as np
import pytest

from tl_video.data import SYNTHETIC_TASKS, VideoQAExample, generate_benchmark, read_jsonl
from tl_video.data.drawing import BACKGROUND, PALETTE, SCENES, render_scene
from tl_video.video import read_video, reverse

PALETTE_NAMES = list(PALETTE)
PALETTE_RGB = np.array([PALETTE[name] for name in PALETTE_NAMES], dtype=np.float64)


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, generate_benchmark(out, n_per_task=8, seed=0)


# --- oracles: answer from decoded frames -------------------------------------------------------


def foreground(frame: np.ndarray) -> np.ndarray:
    return np.abs(frame.astype(np.int64) - np.array(BACKGROUND)).sum(axis=-1) > 90


def colour_counts(frame: np.ndarray) -> Counter:
    """How many foreground pixels are nearest to each palette colour."""
    pixels = frame[foreground(frame)].astype(np.float64)
    if not len(pixels):
        return Counter()
    nearest = np.argmin(((pixels[:, None, :] - PALETTE_RGB[None]) ** 2).sum(-1), axis=1)
    return Counter(PALETTE_NAMES[i] for i in nearest)


def dominant_colour(frame: np.ndarray) -> str | None:
    counts = colour_counts(frame)
    return counts.most_common(1)[0][0] if counts else None


def colour_runs(frames: np.ndarray) -> list[str]:
    runs: list[str] = []
    for frame in frames:
        colour = dominant_colour(frame)
        if colour and (not runs or runs[-1] != colour):
            runs.append(colour)
    return runs


def centroid(frame: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(foreground(frame))
    return np.array([rows.mean(), cols.mean()])


def answer_moving_direction(ex: VideoQAExample, frames: np.ndarray) -> int:
    dy, dx = centroid(frames[-1]) - centroid(frames[0])
    direction = ("down" if dy > 0 else "up") if abs(dy) > abs(dx) else ("right" if dx > 0 else "left")
    return ex.options.index(f"to the {direction}" if direction in ("left", "right") else direction)


def answer_action_sequence(ex: VideoQAExample, frames: np.ndarray) -> int:
    order = colour_runs(frames)
    return [re.findall(r"the (\w+) \w+", option) for option in ex.options].index(order)


def answer_object_count(ex: VideoQAExample, frames: np.ndarray) -> int:
    return ex.options.index(str(len(colour_runs(frames))))


def answer_scene_transition(ex: VideoQAExample, frames: np.ndarray) -> int:
    size = frames.shape[1]
    references = {name: render_scene(name, size).reshape(-1, 3).mean(0) for name in SCENES}

    def scene(frame: np.ndarray) -> str:
        mean = frame.reshape(-1, 3).mean(0)
        return min(references, key=lambda name: np.abs(references[name] - mean).sum())

    return ex.options.index(f"from {scene(frames[0])} to {scene(frames[-1])}")


def answer_antonym(ex: VideoQAExample, frames: np.ndarray) -> int:
    grows = foreground(frames[-1]).sum() > foreground(frames[0]).sum()
    return ex.options.index("It grows larger." if grows else "It shrinks.")


ORACLES = {
    "moving_direction": answer_moving_direction,
    "action_sequence": answer_action_sequence,
    "object_count": answer_object_count,
    "scene_transition": answer_scene_transition,
    "antonym": answer_antonym,
}


# --- tests -------------------------------------------------------------------------------------


def test_writes_videos_and_jsonl(synthetic_set):
    out, examples = synthetic_set
    assert len(examples) == 8 * len(SYNTHETIC_TASKS)
    assert Counter(e.task for e in examples) == {task: 8 for task in SYNTHETIC_TASKS}
    assert read_jsonl(out / "examples.jsonl").examples == examples
    first = (out / "examples.jsonl").read_text().splitlines()[0]
    assert '"video": "videos/moving_direction_0000.mp4"' in first  # relative: the folder is relocatable
    for ex in examples:
        assert len(ex.options) == 4 and len(set(ex.options)) == 4 and ex.source == "synthetic"
        assert 0 <= ex.metadata["reversed_answer_index"] < 4


@pytest.mark.parametrize("num_frames", [16, 8])
def test_ground_truth_is_recoverable_from_the_decoded_mp4(synthetic_set, num_frames):
    # all 16 frames, and the 8 midpoint frames a model would see
    _, examples = synthetic_set
    for ex in examples:
        frames = read_video(ex.video, num_frames=num_frames).frames
        oracle = ORACLES[ex.task]
        assert oracle(ex, frames) == ex.answer_index, ex.example_id
        assert oracle(ex, reverse(frames)) == ex.metadata["reversed_answer_index"], ex.example_id


def test_reversal_changes_the_answer_except_for_counting(synthetic_set):
    _, examples = synthetic_set
    for ex in examples:
        changed = ex.metadata["reversed_answer_index"] != ex.answer_index
        assert changed == (ex.task != "object_count"), ex.example_id


def test_no_single_frame_answers_count_or_sequence(synthetic_set):
    _, examples = synthetic_set
    for ex in examples:
        if ex.task not in ("object_count", "action_sequence"):
            continue
        frames = read_video(ex.video, num_frames=16).frames
        for frame in frames:
            # one shape at a time; compression tints a shape's edge (orange edges decode as red), so a
            # second colour counts as a shape only with at least 30% of the main colour's pixels
            # (shapes in one video have the same radius: areas differ by at most 2x)
            counts = colour_counts(frame).most_common()
            assert len(counts) < 2 or counts[1][1] < 0.3 * counts[0][1], (ex.example_id, counts)


def test_answers_are_balanced_over_letters(tmp_path):
    examples = generate_benchmark(tmp_path, n_per_task=10, seed=3, tasks=["antonym", "object_count"])
    for task in ("antonym", "object_count"):
        letters = Counter(e.answer_letter for e in examples if e.task == task)
        assert set(letters) == {"A", "B", "C", "D"} and max(letters.values()) - min(letters.values()) <= 1


def test_deterministic_and_seed_dependent(tmp_path):
    def jsonl(folder: str, seed: int, n: int = 2) -> str:
        generate_benchmark(tmp_path / folder, n_per_task=n, seed=seed, num_frames=8, size=32)
        return (tmp_path / folder / "examples.jsonl").read_text()

    assert jsonl("a", 7) == jsonl("b", 7)
    assert jsonl("c", 8) != jsonl("a", 7)
    # a larger n_per_task extends a smaller one
    small = jsonl("d", 7).splitlines()
    large = jsonl("e", 7, n=3).splitlines()
    assert all(line in large for line in small)


def test_small_sizes_and_frame_counts_decode(tmp_path):
    examples = generate_benchmark(tmp_path, n_per_task=1, seed=0, num_frames=8, size=48)
    for ex in examples:
        frames = read_video(ex.video, num_frames=8).frames
        assert frames.shape == (8, 48, 48, 3)
        assert ORACLES[ex.task](ex, frames) == ex.answer_index, ex.example_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_per_task": 0}, "n_per_task must be an int >= 1"),
        ({"num_frames": 4}, "num_frames must be an int >= 8"),
        ({"size": 31}, "size must be an int >= 32"),
        ({"size": 33}, "size must be even"),
        ({"fps": 0}, "fps must be a positive"),
        ({"tasks": ["juggling"]}, r"valid tasks: \['moving_direction'"),
        ({"seed": -1}, "seed must be an int >= 0"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_benchmark(tmp_path, **({"n_per_task": 1} | kwargs))


@pytest.mark.filterwarnings("ignore:'tl_video.data.synthetic' found in sys.modules:RuntimeWarning")
def test_command_line(tmp_path, monkeypatch, capsys):
    # runs the module as `python -m tl_video.data.synthetic` does, in this process (where this test
    # file has imported it already, hence the filtered warning; a fresh `python -m` does not warn)
    out = tmp_path / "cli"
    argv = ["tl_video.data.synthetic", "--out", str(out), "--n-per-task", "1", "--seed", "5", "--tasks", "antonym"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        runpy.run_module("tl_video.data.synthetic", run_name="__main__", alter_sys=True)
    assert info.value.code == 0
    assert '"per_task": {"antonym": 1}' in capsys.readouterr().out
    assert len(read_jsonl(out / "examples.jsonl")) == 1

    monkeypatch.setattr(sys, "argv", ["x", "--out", str(out), "--size", "33"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("tl_video.data.synthetic", run_name="__main__", alter_sys=True)
    assert info.value.code == 2
    assert "size must be even" in capsys.readouterr().err
