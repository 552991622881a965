"""Qwen2.5-VL and Qwen3-VL front ends: the checkpoint's own ViT + patch merger over 2-frame tubelets.

Both match `get_video_features(pixel_values_videos, video_grid_thw)` of transformers 5.24
(`models/qwen2_5_vl/modeling_qwen2_5_vl.py`, `models/qwen3_vl/modeling_qwen3_vl.py`): the
`.pooler_output` rows, concatenated over videos, ordered (tubelet, row, col) of the 2x2-merged
grid. One "frame" index is one tubelet of 2 frames (the processor repeats the last frame of an
odd-length clip). Each token also gets its M-RoPE offset (t, h, w) within its position block,
stored as extras `"mrope_offsets"` and read by `tl_video.model.mrope_positions`; Qwen3-VL adds its
DeepStack features as extras `"deepstack"` [n_tokens, levels, d_model].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import nn

from tl_video.frontend.base import VideoFeatures, VideoFrontEnd, timing_kwargs
from tl_video.model.mrope_positions import MROPE_OFFSETS

if TYPE_CHECKING:
    from tl_video.video.timing import VideoTiming

TUBELET = "tubelet (2 frames)"


def tubelet_grid(video_grid_thw: Int[torch.Tensor, "videos 3"], merge: int) -> Int[torch.Tensor, "n_tokens 3"]:
    """(tubelet, row, col) of every merged token, videos one after another (tubelets keep counting)."""
    cells, first = [], 0
    for t, h, w in video_grid_thw.tolist():
        axes = torch.arange(t) + first, torch.arange(h // merge), torch.arange(w // merge)
        cells.append(torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3))
        first += t
    return torch.cat(cells)


class Qwen2_5_VLFrontEnd(VideoFrontEnd):
    """Windowed ViT + `Qwen2_5_VLPatchMerger`; M-RoPE time is scaled by the clip's frame rate.

    The t offset of a token in tubelet i is `floor(i * second_per_grid_ts * tokens_per_second)`
    (the processor's `second_per_grid_ts = 2 / sampled fps` from the `VideoTiming` that `prepare`
    passes as `video_metadata`; 2/24 when no fps is known, `default_fps`).
    """

    family = "qwen2_5_vl"
    frame_unit = TUBELET
    default_fps = 24.0  # Qwen2_5_VLProcessor: `VideoMetadata.sampled_fps` of metadata without fps

    def __init__(
        self, visual: nn.Module, tokens_per_second: float, video_token_id: int, video_placeholder: str
    ):
        super().__init__()
        self.visual = visual
        self.merge = visual.spatial_merge_size
        self.tokens_per_second = tokens_per_second
        self.video_token_id = video_token_id
        self.video_placeholder = video_placeholder

    def video_inputs(self, processed: dict[str, Any]) -> dict[str, torch.Tensor]:
        grid = processed["video_grid_thw"]
        # Without it HF times every tubelet 1 s apart (`get_rope_index`'s fallback).
        seconds = processed.get("second_per_grid_ts")
        seconds = torch.ones(grid.shape[0]) if seconds is None else torch.as_tensor(seconds, dtype=torch.float32)
        return {"pixel_values_videos": processed["pixel_values_videos"], "video_grid_thw": grid, "second_per_grid_ts": seconds}

    @torch.no_grad()
    def encode(
        self,
        pixel_values_videos: Float[torch.Tensor, "patches channels_x_tubelet_x_patch_area"],
        video_grid_thw: Int[torch.Tensor, "videos 3"],
        second_per_grid_ts: Float[torch.Tensor, "videos"],
    ) -> VideoFeatures:
        dtype = next(self.visual.parameters()).dtype
        embeddings = self.visual(pixel_values_videos.to(dtype), grid_thw=video_grid_thw).pooler_output
        grid = tubelet_grid(video_grid_thw.cpu(), self.merge)
        temporal = []
        for (t, h, w), seconds in zip(video_grid_thw.tolist(), second_per_grid_ts.tolist()):
            # The reference's arithmetic: (tubelet * seconds * tokens_per_second), truncated.
            per_tubelet = (torch.arange(t) * seconds * self.tokens_per_second).long()
            temporal.append(per_tubelet.repeat_interleave((h // self.merge) * (w // self.merge)))
        offsets = torch.stack([torch.cat(temporal), grid[:, 1], grid[:, 2]], dim=-1)
        return VideoFeatures(embeddings=embeddings, grid=grid, extras={MROPE_OFFSETS: offsets})


class Qwen3VLFrontEnd(VideoFrontEnd):
    """ViT with a learned, resampled position table + merger, plus DeepStack features.

    Every tubelet is its own M-RoPE block (t offset 0) between `<t seconds>` timestamp text (the
    mean of its two frames' `index / fps`, written by the processor from the `VideoTiming` that
    `prepare` passes; 24 fps when no fps is known, `default_fps`); DeepStack feature set l (from
    vision layer `deepstack_visual_indexes[l]`) is added to the video rows of the residual stream
    after LM layer l.
    """

    family = "qwen3_vl"
    frame_unit = TUBELET
    default_fps = 24.0  # Qwen3VLProcessor.replace_video_token without `video_metadata`

    def __init__(self, visual: nn.Module, video_token_id: int, video_placeholder: str):
        super().__init__()
        self.visual = visual
        self.merge = visual.spatial_merge_size
        self.video_token_id = video_token_id
        self.video_placeholder = video_placeholder

    def process(self, processor: Any, text: str, frames: Any, timing: "VideoTiming | None" = None) -> dict[str, Any]:
        # Qwen3VLVideoProcessor samples 2 fps of an assumed 24 fps clip by default: keep every frame.
        kwargs = timing_kwargs(timing) or {"do_sample_frames": False}
        return processor(text=text, videos=[frames], return_tensors="pt", **kwargs)

    def video_inputs(self, processed: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"pixel_values_videos": processed["pixel_values_videos"], "video_grid_thw": processed["video_grid_thw"]}

    @torch.no_grad()
    def encode(
        self,
        pixel_values_videos: Float[torch.Tensor, "patches channels_x_tubelet_x_patch_area"],
        video_grid_thw: Int[torch.Tensor, "videos 3"],
    ) -> VideoFeatures:
        dtype = next(self.visual.parameters()).dtype
        output = self.visual(pixel_values_videos.to(dtype), grid_thw=video_grid_thw)
        grid = tubelet_grid(video_grid_thw.cpu(), self.merge)
        offsets = torch.stack([torch.zeros_like(grid[:, 0]), grid[:, 1], grid[:, 2]], dim=-1)
        extras = {MROPE_OFFSETS: offsets}
        if output.deepstack_features:
            extras["deepstack"] = torch.stack(list(output.deepstack_features), dim=1)  # [n, levels, d_model]
        return VideoFeatures(embeddings=output.pooler_output, grid=grid, extras=extras)
