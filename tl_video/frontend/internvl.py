"""InternVL3 front end: every frame an image -> InternViT -> CLS dropped -> pixel shuffle -> projector.

InternVL has no video path of its own: `InternVLProcessor` moves the frames into `pixel_values`
[T, 3, H, W] and the model encodes them with `get_image_features`, the rows filling the
`<IMG_CONTEXT>` placeholders of the `Frame{i}: <img>...</img>` blocks. This front end matches
`InternVLModel.get_image_features(pixel_values).pooler_output` of transformers 5.24
(`models/internvl/modeling_internvl.py`) bit for bit: the same vision tower and projector modules
run, and the pixel shuffle is the same pure re-indexing. Tokens are ordered (frame, row, col) of
the shuffled (g/2 x g/2) grid, row-major within each frame.
"""

from __future__ import annotations

from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import nn

from tl_video.frontend.base import VideoFeatures, VideoFrontEnd


def pixel_shuffle(
    features: Float[torch.Tensor, "frames rows cols d_vision"], factor: int
) -> Float[torch.Tensor, "frames rows_out cols_out d_out"]:
    """Fold each `factor x factor` block of patches into channels, in (row offset, col offset) order.

    Output (i, j) is the concatenation of patches (f*i + a, f*j + b) for a, then b, in 0..f-1 — what
    HF's `InternVLModel.pixel_shuffle(scale_factor=1/f)` computes with its view/permute sequence.
    """
    rows, cols = features.shape[1:3]
    if rows % factor or cols % factor:
        raise ValueError(f"a {rows}x{cols} patch grid cannot be pixel-shuffled by {factor}")
    return einops.rearrange(features, "t (i a) (j b) c -> t i j (a b c)", a=factor, b=factor)


class InternVLFrontEnd(VideoFrontEnd):
    family = "internvl"

    def __init__(
        self,
        vision_tower: nn.Module,
        multi_modal_projector: nn.Module,
        vision_feature_layer: int,
        vision_feature_select_strategy: str,
        downsample_ratio: float,
        video_token_id: int,
        video_placeholder: str,
    ):
        super().__init__()
        if not isinstance(vision_feature_layer, int):
            raise ValueError(
                f"InternVL selects one vision layer; vision_feature_layer={vision_feature_layer!r} is not supported"
            )
        factor = round(1 / downsample_ratio)
        if abs(factor * downsample_ratio - 1) > 1e-6:
            raise ValueError(f"downsample_ratio={downsample_ratio} is not 1/n for an integer n")
        self.vision_tower = vision_tower
        self.multi_modal_projector = multi_modal_projector
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.shuffle_factor = factor
        self.video_token_id = video_token_id  # <IMG_CONTEXT>: the id whose rows are replaced
        self.video_placeholder = video_placeholder  # "<video>": the text the prompt carries

    def video_inputs(self, processed: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "pixel_values" not in processed:
            raise ValueError("the InternVL processor returned no pixel_values; was a video passed?")
        return {"pixel_values": processed["pixel_values"]}

    @torch.no_grad()
    def encode(self, pixel_values: Float[torch.Tensor, "frames 3 height width"]) -> VideoFeatures:
        dtype = next(self.vision_tower.parameters()).dtype
        if self.vision_feature_layer == -1:  # HF reads last_hidden_state (after the tower's final norm)
            selected = self.vision_tower(pixel_values=pixel_values.to(dtype), return_dict=True).last_hidden_state
        else:
            outputs = self.vision_tower(pixel_values=pixel_values.to(dtype), output_hidden_states=True, return_dict=True)
            selected = outputs.hidden_states[self.vision_feature_layer]
        if self.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]  # drop CLS
        frames, n_patches = selected.shape[:2]
        side = int(n_patches**0.5)
        if side * side != n_patches:
            raise ValueError(f"{n_patches} patches per frame do not form a square grid")
        shuffled = pixel_shuffle(selected.reshape(frames, side, side, -1), self.shuffle_factor)
        projected = self.multi_modal_projector(shuffled.flatten(1, 2))  # [frames, side_out**2, d_model]
        side_out = shuffled.shape[1]
        grid = torch.stack(
            torch.meshgrid(torch.arange(frames), torch.arange(side_out), torch.arange(side_out), indexing="ij"),
            dim=-1,
        ).reshape(-1, 3)
        return VideoFeatures(embeddings=projected.reshape(-1, projected.shape[-1]), grid=grid)
