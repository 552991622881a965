"""The benchmark shapes: a random LLaVA-NeXT-Video checkpoint saved and loaded through the public path.

`medium` is the issue's CPU shape: 12 layers, d_model 512, 8 frames x 144 video tokens and a
multiple-choice prompt (about 1,445 tokens). `quick` is smaller for development, `tiny` only checks
that the benchmark runs and prints its lines (numbers there mean nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tl_video
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_llava_next_video


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    d_model: int
    heads: int
    frames: int
    image_size: int  # 336 / 14 = 24 patches a side, pooled 2x2 to 12 x 12 = 144 tokens a frame

    def checkpoint_options(self) -> dict[str, Any]:
        return dict(
            num_hidden_layers=self.layers, hidden_size=self.d_model, num_attention_heads=self.heads,
            num_key_value_heads=self.heads, intermediate_size=self.d_model * 43 // 16,
            image_size=self.image_size, patch_size=14,
        )


SHAPES = {
    "medium": Shape("medium", layers=12, d_model=512, heads=8, frames=8, image_size=336),
    "quick": Shape("quick", layers=6, d_model=256, heads=4, frames=4, image_size=224),
    "tiny": Shape("tiny", layers=3, d_model=64, heads=4, frames=2, image_size=56),
}

QUESTION = multiple_choice_prompt(
    "Which of these events happens first in the video?",
    ["a grey cat jumps onto the table", "the front door of the house opens slowly",
     "it starts to rain on the street outside", "a red car stops at the traffic light"],
    answer_index=1,
)


def save_checkpoint(shape: Shape, folder: Path) -> Path:
    """Write the random checkpoint of this shape (same seed every time) into `folder`."""
    return save_tiny_llava_next_video(folder, **shape.checkpoint_options())


def load(folder: Path, dtype: torch.dtype, device: str, keep_hf_model: bool) -> Any:
    """Our model (and, with `keep_hf_model`, the HF model it was converted from) on device/dtype."""
    model = tl_video.HookedVideoTransformer.from_pretrained(folder, keep_hf_model=keep_hf_model)
    model = model.to(device=device, dtype=dtype)
    if keep_hf_model:
        model.hf_model[0].to(device=device, dtype=dtype)
    return model


def prepare(model: Any, shape: Shape) -> Any:
    """The benchmark input: seeded random frames and the multiple-choice question."""
    frames = np.random.RandomState(0).randint(0, 256, (shape.frames, 360, 480, 3), dtype=np.uint8)
    return model.prepare(video=frames, prompt=QUESTION, answer_prefix="Best option:(")
