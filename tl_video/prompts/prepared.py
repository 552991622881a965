"""A prepared input: plain token ids (video ids point into the model's video bank) plus its layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int, UInt8

from tl_video.prompts.layout import TokenLayout


@dataclass(frozen=True)
class PreparedInput:
    tokens: Int[torch.Tensor, "1 pos"]  # feed to model(...), run_with_cache(...), patching, ...
    layout: TokenLayout
    text: str  # the rendered prompt, with one placeholder standing for the video
    frames: UInt8[np.ndarray, "frames height width 3"]  # the frames that were encoded

    def __repr__(self) -> str:
        return f"PreparedInput(tokens={tuple(self.tokens.shape)}, text={self.text!r})\n{self.layout!r}"
