"""A synthetic temporal VideoQA benchmark: short rendered videos whose answers need more than one frame.

Why: circuit analyses need examples whose ground truth is certain and whose answer depends on
temporal order, without downloading a benchmark. The five tasks mirror the TVBench tasks of the
information-flow study (docs/methods.md, "Data"):

- ``moving_direction``: a shape crosses the frame left, right, up or down. Any single frame shows
  it somewhere along its path, which does not tell the direction.
- ``action_sequence``: three coloured shapes appear one after another, each alone during its part
  of the video; which order?
- ``object_count``: 2-5 shapes appear one by one and disappear again, so no frame shows more than
  one; how many?
- ``scene_transition``: the textured background switches from scene A to scene B; from which to which?
- ``antonym``: a shape grows or shrinks (distractors: stays the same size, changes colour).

Each example is 4-way multiple choice. Correct answers are spread evenly over the letters A-D
within each task: every block of four consecutive examples uses each letter once, so the counts
differ by at most one. Every event lasts at least two frames, so
sampling at least half of the frames at segment midpoints sees every event.

Reversed counterpart: ``metadata["reversed_answer_index"]`` is the correct option for the same
video played backwards (direction flipped, sequence reversed, scenes swapped, grow <-> shrink;
the count is unchanged). No reversed file is written: apply
:func:`tl_video.video.corruptions.reverse` to the decoded frames, which is also how the corrupted
run of a reversal patching experiment is built. The reversed correct option is always among the
options.

Output: ``out_dir/videos/{task}_{index:04d}.mp4`` and ``out_dir/examples.jsonl`` (relative video
paths; read it with :func:`tl_video.data.read_jsonl`). The same arguments give byte-identical
``examples.jsonl``. Command line::

    python -m tl_video.data.synthetic --out DIR --n-per-task N --seed S
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import UInt8
from tqdm import tqdm

from tl_video.data.drawing import PALETTE, SCENES, SHAPES, blank_canvas, draw_shape, render_scene
from tl_video.data.examples import VideoQAExample
from tl_video.data.jsonl import write_jsonl
from tl_video.video.writer import write_video

__all__ = ["TASKS", "generate_benchmark", "main"]

NUM_OPTIONS = 4
MIN_FRAMES = 8
MIN_SIZE = 32

Frames = UInt8[np.ndarray, "frames height width 3"]


@dataclass(frozen=True, kw_only=True)
class _Rendered:
    """One rendered example before it is written: frames, question, options and both answers."""

    frames: Frames
    question: str
    options: tuple[str, ...]
    answer_index: int
    reversed_answer_index: int
    ground_truth: dict[str, Any]


def _arrange(correct: str, distractors: Sequence[str], target: int, rng: np.random.Generator) -> tuple[tuple[str, ...], int]:
    """Options with ``correct`` at position ``target`` and the distractors in random order elsewhere."""
    order = [distractors[i] for i in rng.permutation(len(distractors))]
    order.insert(target, correct)
    return tuple(order), target


def _slots(num_frames: int, count: int) -> list[np.ndarray]:
    """``count`` contiguous, near-equal runs of frame indices covering ``0..num_frames-1``."""
    return np.array_split(np.arange(num_frames), count)


def _random_center(rng: np.random.Generator, size: int, radius: float) -> tuple[float, float]:
    margin = radius + 2
    return float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin))


def _moving_direction(rng: np.random.Generator, target: int, num_frames: int, size: int) -> _Rendered:
    directions = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    direction = str(rng.choice(list(directions)))
    colour = str(rng.choice(list(PALETTE)))
    shape = str(rng.choice(SHAPES))
    radius = size / 8
    lo, hi = radius + 2, size - radius - 2
    across = float(rng.uniform(lo, hi))
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    dy, dx = directions[direction]
    for t in range(num_frames):
        progress = t / (num_frames - 1)
        along = lo + (hi - lo) * progress
        if dy == 0:
            center = (across, along if dx > 0 else size - along)
        else:
            center = (along if dy > 0 else size - along, across)
        frames[t] = blank_canvas(size)
        draw_shape(frames[t], shape, center, radius, PALETTE[colour])
    text = {d: (f"to the {d}" if d in ("left", "right") else d) for d in directions}
    options, answer = _arrange(text[direction], [text[d] for d in directions if d != direction], target, rng)
    return _Rendered(
        frames=frames,
        question=f"In which direction does the {colour} {shape} move?",
        options=options,
        answer_index=answer,
        reversed_answer_index=options.index(text[opposite[direction]]),
        ground_truth={"direction": direction, "colour": colour, "shape": shape},
    )


_PERMUTATIONS_3 = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]


def _action_sequence(rng: np.random.Generator, target: int, num_frames: int, size: int) -> _Rendered:
    colours = [str(c) for c in rng.choice(list(PALETTE), size=3, replace=False)]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    items = [f"the {c} {s}" for c, s in zip(colours, shapes, strict=True)]
    radius = size / 6
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for colour, shape, slot in zip(colours, shapes, _slots(num_frames, 3), strict=True):
        center = _random_center(rng, size, radius)
        for t in slot:
            frames[t] = blank_canvas(size)
            draw_shape(frames[t], shape, center, radius, PALETTE[colour])

    def sentence(order: Sequence[int]) -> str:
        return ", then ".join(items[i] for i in order)

    correct, reversed_ = (0, 1, 2), (2, 1, 0)
    others = [p for p in _PERMUTATIONS_3 if p not in (correct, reversed_)]
    picked = [others[i] for i in rng.choice(len(others), size=2, replace=False)]
    options, answer = _arrange(sentence(correct), [sentence(reversed_)] + [sentence(p) for p in picked], target, rng)
    return _Rendered(
        frames=frames,
        question="In which order do the shapes appear?",
        options=options,
        answer_index=answer,
        reversed_answer_index=options.index(sentence(reversed_)),
        ground_truth={"order": [f"{c} {s}" for c, s in zip(colours, shapes, strict=True)]},
    )



def _object_count(rng: np.random.Generator, target: int, num_frames: int, size: int) -> _Rendered:
    max_count = min(5, num_frames // 2)
    count = int(rng.integers(2, max_count + 1))
    colours = [str(c) for c in rng.choice(list(PALETTE), size=count, replace=False)]
    radius = size / 7
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for colour, slot in zip(colours, _slots(num_frames, count), strict=True):
        shape = str(rng.choice(SHAPES))
        center = _random_center(rng, size, radius)
        for t in slot:
            frames[t] = blank_canvas(size)
            draw_shape(frames[t], shape, center, radius, PALETTE[colour])
    pool = [n for n in range(1, 7) if n != count]
    distractors = [str(pool[i]) for i in rng.choice(len(pool), size=NUM_OPTIONS - 1, replace=False)]
    options, answer = _arrange(str(count), distractors, target, rng)
    return _Rendered(
        frames=frames,
        question="How many shapes appear in the video, one after another?",
        options=options,
        answer_index=answer,
        reversed_answer_index=answer,
        ground_truth={"count": count, "colours": colours},
    )


def _scene_transition(rng: np.random.Generator, target: int, num_frames: int, size: int) -> _Rendered:
    names = list(SCENES)
    a, b, c, d = (names[i] for i in rng.choice(len(names), size=4, replace=False))
    change = int(rng.integers(round(0.3 * num_frames), round(0.7 * num_frames) + 1))
    scene_a, scene_b = render_scene(a, size), render_scene(b, size)
    frames = np.stack([scene_a if t < change else scene_b for t in range(num_frames)])

    def sentence(first: str, second: str) -> str:
        return f"from {first} to {second}"

    distractors = [sentence(b, a), sentence(a, c), sentence(d, b)]
    options, answer = _arrange(sentence(a, b), distractors, target, rng)
    return _Rendered(
        frames=frames,
        question="How does the scene change?",
        options=options,
        answer_index=answer,
        reversed_answer_index=options.index(sentence(b, a)),
        ground_truth={"first": a, "second": b, "change_frame": change},
    )


def _antonym(rng: np.random.Generator, target: int, num_frames: int, size: int) -> _Rendered:
    growing = bool(rng.integers(2))
    colour = str(rng.choice(list(PALETTE)))
    shape = str(rng.choice(SHAPES))
    small, large = size * 0.08, size * 0.3
    center = _random_center(rng, size, large)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        progress = t / (num_frames - 1)
        radius = small + (large - small) * (progress if growing else 1 - progress)
        frames[t] = blank_canvas(size)
        draw_shape(frames[t], shape, center, radius, PALETTE[colour])
    grows, shrinks = "It grows larger.", "It shrinks."
    correct, other = (grows, shrinks) if growing else (shrinks, grows)
    options, answer = _arrange(correct, [other, "It stays the same size.", "It changes colour."], target, rng)
    return _Rendered(
        frames=frames,
        question=f"What happens to the {colour} {shape}?",
        options=options,
        answer_index=answer,
        reversed_answer_index=options.index(other),
        ground_truth={"change": "grows" if growing else "shrinks", "colour": colour, "shape": shape},
    )


TASKS: dict[str, Callable[[np.random.Generator, int, int, int], _Rendered]] = {
    "moving_direction": _moving_direction,
    "action_sequence": _action_sequence,
    "object_count": _object_count,
    "scene_transition": _scene_transition,
    "antonym": _antonym,
}
"""Task name -> renderer ``(rng, target option index, num_frames, size) -> rendered example``."""


def generate_benchmark(
    out_dir: str | Path,
    n_per_task: int = 20,
    seed: int = 0,
    num_frames: int = 16,
    size: int = 64,
    *,
    fps: float = 8.0,
    tasks: Sequence[str] | None = None,
    progress: bool = False,
) -> tuple[VideoQAExample, ...]:
    """Render the benchmark into ``out_dir`` (videos + ``examples.jsonl``) and return its examples.

    Args:
        out_dir: output folder, created if needed; files of the same names are overwritten.
        n_per_task: examples per task (>= 1).
        seed: the seed; example ``i`` of task ``k`` draws from its own generator seeded with
            ``(seed, k, i)``, so the same arguments give the same benchmark and a larger
            ``n_per_task`` extends a smaller one.
        num_frames: frames per video (>= 8).
        size: frame height and width in pixels (even, >= 32).
        fps: frame rate of the written videos.
        tasks: which tasks (default all of :data:`TASKS`, in that order).
        progress: show a tqdm progress bar on stderr.

    Returns:
        The examples, with absolute video paths (``examples.jsonl`` stores them relative to ``out_dir``).
    """
    _check_int("n_per_task", n_per_task, 1)
    _check_int("seed", seed, 0)
    _check_int("num_frames", num_frames, MIN_FRAMES)
    _check_int("size", size, MIN_SIZE)
    if size % 2:
        raise ValueError(f"size must be even (yuv420p video), got {size}.")
    if isinstance(fps, bool) or not isinstance(fps, Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}.")
    if isinstance(tasks, str):
        raise ValueError(f"tasks must be a list of task names, got the string {tasks!r}; write tasks=[{tasks!r}].")
    chosen = list(TASKS) if tasks is None else list(tasks)
    unknown = [t for t in chosen if t not in TASKS]
    if unknown or not chosen:
        raise ValueError(f"unknown or no tasks {unknown or chosen}; valid tasks: {list(TASKS)}.")

    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    examples: list[VideoQAExample] = []
    with tqdm(total=n_per_task * len(chosen), desc="synthetic videos", unit="video", disable=not progress, file=sys.stderr) as bar:
        for task in chosen:
            task_number = list(TASKS).index(task)
            for index in range(n_per_task):
                rng = np.random.default_rng([seed, task_number, index, 0])
                item = TASKS[task](rng, _target_letter(seed, task_number, index), num_frames, size)
                relpath = f"videos/{task}_{index:04d}.mp4"
                write_video(out_dir / relpath, item.frames, fps)
                examples.append(
                    VideoQAExample(
                        example_id=f"{task}/{index:04d}",
                        video=relpath,
                        question=item.question,
                        options=item.options,
                        answer_index=item.answer_index,
                        task=task,
                        source="synthetic",
                        metadata={
                            "reversed_answer_index": item.reversed_answer_index,
                            "ground_truth": item.ground_truth,
                            "num_frames": num_frames,
                            "size": size,
                            "fps": float(fps),
                            "seed": seed,
                        },
                    )
                )
                bar.update()
    write_jsonl(out_dir / "examples.jsonl", examples)
    root = out_dir.absolute()
    return tuple(replace(e, video=str(root / e.video)) for e in examples)


def _target_letter(seed: int, task_number: int, index: int) -> int:
    """Where the correct option goes: each block of 4 consecutive examples uses each letter once."""
    block = np.random.default_rng([seed, task_number, index // NUM_OPTIONS, 1]).permutation(NUM_OPTIONS)
    return int(block[index % NUM_OPTIONS])


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``python -m tl_video.data.synthetic --out DIR [--n-per-task N] [--seed S] ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m tl_video.data.synthetic",
        description="Render the synthetic temporal VideoQA benchmark (videos/ + examples.jsonl).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument("--n-per-task", type=int, default=20, help="examples per task (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--num-frames", type=int, default=16, help=f"frames per video, >= {MIN_FRAMES} (default: 16)")
    parser.add_argument("--size", type=int, default=64, help=f"frame height and width in pixels, even, >= {MIN_SIZE} (default: 64)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate of the videos in frames per second (default: 8)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=None, help="tasks to render (default: all)")
    args = parser.parse_args(argv)
    try:
        examples = generate_benchmark(
            args.out,
            args.n_per_task,
            args.seed,
            args.num_frames,
            args.size,
            fps=args.fps,
            tasks=args.tasks,
            progress=True,
        )
    except (ValueError, OSError) as exc:  # bad numbers, an --out that is a file or cannot be written
        print(f"{parser.prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for example in examples:
        counts[example.task or ""] = counts.get(example.task or "", 0) + 1
    print(json.dumps({"examples": str(args.out / "examples.jsonl"), "per_task": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
