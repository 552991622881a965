"""LLaVA-OneVision / LLaVA-Video front end: SigLIP -> projector -> bilinear resize -> one newline row.

Matches `LlavaOnevisionModel.get_video_features(...).pooler_output` of transformers 5.24
(`models/llava_onevision/modeling_llava_onevision.py`, `get_video_features` + `apply_pooling`):

1. every frame through the SigLIP tower; `hidden_states[vision_feature_layer]` (-1: the last
   encoder layer, *before* `post_layernorm`); CLS dropped only for the `"default"` strategy
   (the real checkpoints use `"full"`: SigLIP has no CLS);
2. `multi_modal_projector` (linear_1 -> GELU -> linear_2) on every patch;
3. each frame's g x g grid (g = image_size // patch_size, from the config, so frames must be
   exactly `image_size`, as the processor makes them) bilinearly resized to ceil(g/2) x ceil(g/2)
   (`align_corners=False`; 27 -> 14 in the real checkpoints is not an average pool);
4. the learned `image_newline` row appended **once after all frames** of each video.

Token order and grid convention: frame, row, col of the ceil(g/2) grid, row-major; then the
newline token, whose grid entry is `(T - 1, ceil(g/2), 0)`: an extra row under the last
frame's grid, as the newline ends the last frame's rows in the sequence. So the newline is one of
the `video` rows (HF replaces it like every other `<video>` placeholder), it belongs to the last
frame (`frame[-1]`, the `frame_{T-1}` segment; the frames still partition the video), and tables
indexed by (frame, row, col) get one extra row that only the last frame fills, never a negative
index that would wrap onto a real token.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float
from torch import nn

from tl_video.frontend.base import VideoFeatures, VideoFrontEnd


class LlavaOnevisionFrontEnd(VideoFrontEnd):
    family = "llava_onevision"

    def __init__(
        self,
        vision_tower: nn.Module,
        multi_modal_projector: nn.Module,
        image_newline: nn.Parameter,
        vision_feature_layer: int | list[int],
        vision_feature_select_strategy: str,
        grid_side: int,
        video_token_id: int,
        video_placeholder: str,
    ):
        super().__init__()
        self.vision_tower = vision_tower
        self.multi_modal_projector = multi_modal_projector
        self.image_newline = image_newline  # [d_model], shared with the HF model
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.grid_side = grid_side  # g: patches per side of one frame (image_size // patch_size)
        self.video_token_id = video_token_id
        self.video_placeholder = video_placeholder

    def video_inputs(self, processed: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"pixel_values_videos": processed["pixel_values_videos"]}

    @property
    def pooled_side(self) -> int:
        """ceil(g/2): rows (= columns) of each frame's grid after the bilinear resize."""
        return math.ceil(self.grid_side / 2)

    @torch.no_grad()
    def encode(self, pixel_values_videos: Float[torch.Tensor, "batch frames 3 height width"]) -> VideoFeatures:
        batch, frames, _, height, width = pixel_values_videos.shape
        dtype = next(self.vision_tower.parameters()).dtype
        pixels = pixel_values_videos.flatten(0, 1).to(dtype)
        hidden = self.vision_tower(pixels, output_hidden_states=True, return_dict=True).hidden_states
        if isinstance(self.vision_feature_layer, int):
            selected = hidden[self.vision_feature_layer]
        else:
            selected = torch.cat([hidden[layer] for layer in self.vision_feature_layer], dim=-1)
        if self.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]  # drop CLS
        projected = self.multi_modal_projector(selected)  # [batch*frames, g*g, d_model]
        g = self.grid_side
        if projected.shape[1] != g * g:
            raise ValueError(
                f"frames of {height}x{width} pixels give {projected.shape[1]} patches, but LLaVA-OneVision pools a "
                f"{g}x{g} grid per frame; resize frames to the checkpoint's image size (its processor does)"
            )
        d_model = projected.shape[-1]
        grid_maps = projected.view(batch * frames, g, g, d_model).permute(0, 3, 1, 2).contiguous()
        side = self.pooled_side
        pooled = nn.functional.interpolate(grid_maps, size=[side, side], mode="bilinear")
        pooled = pooled.permute(0, 2, 3, 1).reshape(batch, frames * side * side, d_model)
        newline = self.image_newline[None, None, :].to(pooled).expand(batch, 1, d_model)
        embeddings = torch.cat((pooled, newline), dim=1).reshape(-1, d_model)
        return VideoFeatures(embeddings=embeddings, grid=onevision_grid(batch, frames, side))


def onevision_grid(videos: int, frames: int, side: int) -> torch.Tensor:
    """(frame, row, col) of every token: frames x side x side, then the newline at (T-1, side, 0).

    Frame indices run on across videos (video b's frames are b*T ... b*T + T - 1), as in the
    LLaVA-NeXT-Video front end.
    """
    per_video = []
    for video in range(videos):
        first = video * frames
        cells = torch.stack(
            torch.meshgrid(
                torch.arange(first, first + frames), torch.arange(side), torch.arange(side), indexing="ij"
            ),
            dim=-1,
        ).reshape(-1, 3)
        newline = torch.tensor([[first + frames - 1, side, 0]])
        per_video += [cells, newline]
    return torch.cat(per_video)
