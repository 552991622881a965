"""What every front end produces: projected video tokens plus each token's (frame, row, col)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import nn

if TYPE_CHECKING:
    from tl_video.video.timing import VideoTiming


@dataclass(frozen=True)
class VideoFeatures:
    """Projected video tokens in the order the LM's placeholders consume them."""

    embeddings: Float[torch.Tensor, "n_tokens d_model"]
    grid: Int[torch.Tensor, "n_tokens 3"]  # (frame or tubelet, row, col) of each token
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-token extras, e.g. deepstack


class VideoFrontEnd(nn.Module):
    """Holds the checkpoint's own vision tower and projector; `encode` mirrors HF's video path.

    Subclasses state only what differs: which processor outputs they read and how tokens are
    pooled and ordered. `frame_unit` says what one "frame" index means (2 frames for tubelets).
    """

    family: ClassVar[str]
    frame_unit: ClassVar[str] = "frame"
    # Families whose inputs depend on when frames were taken (M-RoPE time, timestamp text) set the
    # frame rate their HF processor assumes without `video_metadata`; None: timing is not used.
    default_fps: ClassVar[float | None] = None

    video_token_id: int  # the placeholder id the processor expands, one per video token
    video_placeholder: str  # the placeholder text a prompt may contain, e.g. "<video>"

    def process(self, processor: Any, text: str, frames: Any, timing: "VideoTiming | None" = None) -> dict[str, Any]:
        """Run the checkpoint's processor on one prompt and video (`[T, H, W, 3]` uint8 frames).

        `timing` (only passed to families with a `default_fps`) reaches the processor as HF's
        `video_metadata`, with `do_sample_frames=False`: the frames given are the frames encoded.
        Override only where the processor's output needs adjusting, e.g. a placeholder count the
        processor gets wrong for this family (PLLaVA).
        """
        return processor(text=text, videos=[frames], return_tensors="pt", **timing_kwargs(timing))

    def video_inputs(self, processed: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The processor outputs `encode` needs (e.g. pixel_values_videos, video_grid_thw)."""
        raise NotImplementedError

    def encode(self, **video_inputs: torch.Tensor) -> VideoFeatures:
        raise NotImplementedError


def timing_kwargs(timing: "VideoTiming | None") -> dict[str, Any]:
    """Processor kwargs carrying `timing` (a fresh `VideoMetadata`, frames kept as given); {} for None."""
    if timing is None:
        return {}
    return {"video_metadata": [timing.video_metadata()], "do_sample_frames": False}
