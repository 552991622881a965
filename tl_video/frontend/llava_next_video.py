"""LLaVA-NeXT-Video front end: CLIP tower -> feature layer (CLS dropped) -> 2x2 pool -> projector.

Matches `LlavaNextVideoModel.get_video_features(...).pooler_output` of transformers 5.x:
tokens are ordered (frame, row, col), row-major within each frame.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import nn

from tl_video.frontend.base import VideoFeatures, VideoFrontEnd


class LlavaNextVideoFrontEnd(VideoFrontEnd):
    family = "llava_next_video"

    def __init__(
        self,
        vision_tower: nn.Module,
        vision_resampler: nn.Module,
        multi_modal_projector: nn.Module,
        vision_feature_layer: int | list[int],
        vision_feature_select_strategy: str,
        video_token_id: int,
        video_placeholder: str,
    ):
        super().__init__()
        self.vision_tower = vision_tower
        self.vision_resampler = vision_resampler
        self.multi_modal_projector = multi_modal_projector
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.video_token_id = video_token_id
        self.video_placeholder = video_placeholder

    def video_inputs(self, processed: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"pixel_values_videos": processed["pixel_values_videos"]}

    @torch.no_grad()
    def encode(self, pixel_values_videos: Float[torch.Tensor, "batch frames 3 height width"]) -> VideoFeatures:
        batch, frames = pixel_values_videos.shape[:2]
        dtype = next(self.vision_tower.parameters()).dtype
        pixels = pixel_values_videos.flatten(0, 1).to(dtype)
        hidden = self.vision_tower(pixels, output_hidden_states=True, return_dict=True).hidden_states
        if isinstance(self.vision_feature_layer, int):
            selected = hidden[self.vision_feature_layer]
        else:
            selected = torch.cat([hidden[layer] for layer in self.vision_feature_layer], dim=-1)
        if self.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]  # drop CLS
        pooled = self.vision_resampler(selected)  # [batch*frames, side*side, d_vision]
        projected = self.multi_modal_projector(pooled)
        tokens_per_frame = projected.shape[1]
        side = int(round(tokens_per_frame**0.5))
        grid = torch.stack(
            torch.meshgrid(torch.arange(batch * frames), torch.arange(side), torch.arange(side), indexing="ij"),
            dim=-1,
        ).reshape(-1, 3)
        return VideoFeatures(embeddings=projected.reshape(-1, projected.shape[-1]), grid=grid)
