"""Accuracy of a VideoLLM on the synthetic temporal benchmark, on clean, frozen and reversed videos.

Question: does the model answer from what happens *across* frames? Three conditions per example,
all decoded from the example's mp4 file with :func:`tl_video.video.read_video`:

- ``clean``: the video as it is; correct = ``answer_index``.
- ``frozen``: every frame replaced by the middle frame (:func:`tl_video.video.freeze`, index T//2);
  correct = still ``answer_index``. A model that reads the answer off one frame keeps its accuracy;
  one that needs cross-frame information drops to about chance on the temporal tasks.
- ``reversed``: the frames in reverse order (:func:`tl_video.video.reverse`); correct =
  ``metadata["reversed_answer_index"]`` (direction flipped, order reversed, scenes swapped,
  grow <-> shrink; the count is unchanged).

The prediction is the argmax of the next-token logits over the option letter tokens after the
paper's multiple-choice prompt and "Best option:(" (:func:`tl_video.prompts.prepare_example`,
:func:`tl_video.prompts.answers.option_token_ids`), computed by our ``HookedVideoTransformer``.
The three conditions of one example share their token layout and run as one batch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from tl_video.data.examples import VideoQAExample
from tl_video.prompts.answers import option_token_ids
from tl_video.prompts.prepare import prepare_example

if TYPE_CHECKING:
    from tl_video.model.hooked_video_transformer import HookedVideoTransformer

__all__ = ["CONDITIONS", "REVERSIBLE_TASKS", "TaskAccuracy", "ToyEvaluation", "corrupt", "evaluate_toy"]

CONDITIONS = ("clean", "frozen", "reversed")
REVERSIBLE_TASKS = ("moving_direction", "action_sequence", "scene_transition", "antonym")
"""Tasks whose answer changes when the video is played backwards (object_count's does not)."""


@dataclass(frozen=True)
class TaskAccuracy:
    """Correct answers of one task under one condition, with the denominator."""

    task: str
    condition: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


@dataclass(frozen=True)
class ToyEvaluation:
    """Per-task accuracies under each condition, in task order of the examples."""

    num_frames: int
    rows: tuple[TaskAccuracy, ...]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(row.task for row in self.rows))

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(row.condition for row in self.rows))

    def get(self, task: str, condition: str) -> TaskAccuracy:
        for row in self.rows:
            if row.task == task and row.condition == condition:
                return row
        raise KeyError(f"no accuracy for task {task!r} under {condition!r}; tasks {self.tasks}, conditions {self.conditions}")

    def accuracy(self, task: str, condition: str) -> float:
        return self.get(task, condition).accuracy

    def to_json(self) -> dict[str, Any]:
        return {"num_frames": self.num_frames, "rows": [asdict(row) | {"accuracy": row.accuracy} for row in self.rows]}

    def markdown_table(self) -> str:
        """One row per task, one column per condition: "accuracy (correct/total)"."""
        header = "| task | " + " | ".join(self.conditions) + " |"
        lines = [header, "|" + "---|" * (len(self.conditions) + 1)]
        for task in self.tasks:
            cells = []
            for condition in self.conditions:
                row = self.get(task, condition)
                cells.append(f"{row.accuracy:.1%} ({row.correct}/{row.total})")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def corrupt(frames: np.ndarray, condition: str) -> np.ndarray:
    """The frames seen under ``condition`` (see the module docstring)."""
    from tl_video.video import freeze, reverse

    if condition == "clean":
        return frames
    if condition == "frozen":
        return freeze(frames, frames.shape[0] // 2)
    if condition == "reversed":
        return reverse(frames)
    raise ValueError(f"unknown condition {condition!r}; valid conditions: {CONDITIONS}")


def _target(example: VideoQAExample, condition: str) -> int:
    if condition == "reversed":
        return int(example.metadata["reversed_answer_index"])
    return int(example.answer_index)


@torch.no_grad()
def evaluate_toy(
    model: "HookedVideoTransformer",
    examples: Iterable[VideoQAExample],
    *,
    num_frames: int = 8,
    conditions: Sequence[str] = CONDITIONS,
    progress: bool = False,
) -> ToyEvaluation:
    """Accuracy per task of ``model`` on synthetic-benchmark ``examples`` under each condition.

    Args:
        model: a loaded ``HookedVideoTransformer`` (its video bank gains the examples' videos).
        examples: multiple-choice examples with ``metadata["reversed_answer_index"]`` (as
            :func:`tl_video.data.synthetic.generate_benchmark` writes them).
        num_frames: frames decoded per video (segment midpoints).
        conditions: any of :data:`CONDITIONS`.
        progress: show a tqdm bar on stderr.
    """
    from tl_video.video import read_video

    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"unknown or no conditions {unknown or list(conditions)}; valid conditions: {CONDITIONS}")
    counts: dict[tuple[str, str], list[int]] = {}
    examples = list(examples)
    for example in tqdm(examples, desc="evaluate", unit="video", disable=not progress, file=sys.stderr):
        if not example.is_multiple_choice or example.answer_index is None:
            raise ValueError(f"example {example.example_id!r} is not a labelled multiple-choice question")
        if "reversed" in conditions and "reversed_answer_index" not in example.metadata:
            raise ValueError(f"example {example.example_id!r} has no metadata['reversed_answer_index']")
        frames = read_video(example.video, num_frames=num_frames, start=example.start, end=example.end).frames
        prepared = [prepare_example(model, example, num_frames=num_frames, video=corrupt(frames, c)) for c in conditions]
        letter_ids = list(option_token_ids(model.tokenizer, prepared[0]).values())
        logits = model(torch.cat([p.tokens for p in prepared]))[:, -1, letter_ids]
        for condition, guess in zip(conditions, logits.argmax(-1).tolist(), strict=True):
            tally = counts.setdefault((example.task or "", condition), [0, 0])
            tally[0] += int(guess == _target(example, condition))
            tally[1] += 1
    tasks = dict.fromkeys(example.task or "" for example in examples)
    rows = tuple(TaskAccuracy(task, c, *counts[(task, c)]) for task in tasks for c in conditions)
    return ToyEvaluation(num_frames=num_frames, rows=rows)
