"""A prepared input: plain token ids (video ids point into the model's video bank) plus its layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int, UInt8

from tl_video.prompts.layout import TokenLayout
from tl_video.video.timing import VideoTiming


@dataclass(frozen=True)
class PreparedInput:
    tokens: Int[torch.Tensor, "1 pos"]  # feed to model(...), run_with_cache(...), patching, ...
    layout: TokenLayout
    text: str  # the rendered prompt, with one placeholder standing for the video
    frames: UInt8[np.ndarray, "frames height width 3"]  # the frames that were encoded
    prompt_style: str = "chat"  # "chat" (the checkpoint's chat template) or "paper" (the reference's literal text)
    # When the frames were taken (source fps, frame indices; `.source == "assumed"`: the processor's
    # default, no fps was known); None for a frame array given to a family that uses no timing.
    timing: VideoTiming | None = None

    def check_same_as(self, other: "PreparedInput") -> None:
        """Raise unless `other` differs only in its video: same layout and the same text token ids.

        Clean vs corrupted runs must differ in the video alone; a text difference (another prompt, or a
        VideoLLaMA3 timestamp from another frame rate) would be patched silently as if it were video.
        """
        self.layout.check_same_as(other.layout)
        is_text = torch.ones(self.layout.n_tokens, dtype=torch.bool)
        is_text[list(self.layout.video_positions)] = False
        mine, theirs = self.tokens[0].cpu(), other.tokens[0].cpu()
        differing = torch.nonzero(is_text & (mine != theirs)).flatten()
        if differing.numel():
            at = int(differing[0])
            raise ValueError(
                f"the two inputs differ in their text, not only their video: token {at} is id {int(mine[at])} vs "
                f"{int(theirs[at])} ({differing.numel()} text tokens differ); prepare both with the same prompt, "
                "prompt style and timing (pass timing=clean.timing when preparing a corrupted copy)"
            )

    def __repr__(self) -> str:
        return (
            f"PreparedInput(tokens={tuple(self.tokens.shape)}, prompt_style={self.prompt_style!r}, text={self.text!r})"
            + (f"\ntiming: {self.timing}" if self.timing is not None else "")
            + f"\n{self.layout!r}"
        )
