"""PLLaVA-pooled LLaVA-NeXT "Video-FT" front end: CLIP -> projector -> adaptive 3D average pool.

transformers has no video path for these checkpoints (they load as a plain
`LlavaForConditionalGeneration`); the reference is PLLaVA's `PllavaMultiModalProjector`, restated
in `tl_video.testing.tiny_pllava.pllava_reference_video_features` (the parity oracle):

1. every frame through the CLIP tower; `hidden_states[vision_feature_layer]` (-2), CLS dropped
   (`"default"`);
2. the projector, linear_1 -> GELU -> linear_2, on every patch (projection *before* pooling,
   the reverse of LLaVA-NeXT-Video);
3. `[batch, d_model, T, g, g]` -> `adaptive_avg_pool3d(pooling_shape)` = (T', h', w');
4. flattened in (t, h, w) order.

Grid convention: (t', row, col) of the pooled grid, so one "frame" index is one pooled time slice
(frames [floor(t' T/T'), ceil((t'+1) T/T')) of the clip; exactly frame t' when T = T').

Frames: with a video processor in the checkpoint's processor (the tiny stand-in), it prepares the
clip; published folders carry an image processor only, and `pllava_frame_pixels` prepares the
clip the way `PllavaProcessor` does (every frame resized alike, then CLIP-processed).

The prompt holds `<image>` once (`config.image_token_id`; PLLaVA prompts read
`USER: <image>\\n... ASSISTANT:`). The checkpoint's processor may expand it to a count that
ignores `pooling_shape` (a `LlavaNextVideoProcessor` gives T * (g/2)^2), so `process` rewrites the
placeholder run to exactly T' * h' * w' copies.

Known divergence from upstream PLLaVA: when a clip has fewer frames than `config.num_frames`,
PLLaVA repeats frames (`repeat_interleave`) before the tower; here the clip is used as given
(the adaptive pool still yields T' slices), as in the oracle.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import nn

from tl_video.frontend.base import VideoFeatures, VideoFrontEnd


class PllavaFrontEnd(VideoFrontEnd):
    family = "pllava"

    def __init__(
        self,
        vision_tower: nn.Module,
        multi_modal_projector: nn.Module,
        vision_feature_layer: int | list[int],
        vision_feature_select_strategy: str,
        pooling_shape: tuple[int, int, int],
        video_token_id: int,
        video_placeholder: str,
    ):
        super().__init__()
        if len(pooling_shape) != 3 or min(pooling_shape) < 1:
            raise ValueError(f"pooling_shape must be three positive sizes (T', h', w'), got {list(pooling_shape)}")
        self.vision_tower = vision_tower
        self.multi_modal_projector = multi_modal_projector
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.pooling_shape = tuple(int(size) for size in pooling_shape)
        self.video_token_id = video_token_id
        self.video_placeholder = video_placeholder

    @property
    def tokens_per_video(self) -> int:
        return math.prod(self.pooling_shape)

    def process(self, processor: Any, text: str, frames: np.ndarray) -> dict[str, Any]:
        """The processor's output with the placeholder run rewritten to T' * h' * w' copies.

        A processor with a video processor runs on the clip; one with an image processor only (what
        PLLaVA and LLaVA-NeXT checkpoints carry) prepares the frames the way PLLaVA does
        (`pllava_frame_pixels`) and tokenizes the text with its tokenizer.
        """
        if getattr(processor, "video_processor", None) is not None:
            processed = dict(processor(text=text, videos=[frames], return_tensors="pt"))
        elif getattr(processor, "image_processor", None) is not None:
            processed = dict(processor.tokenizer(text, return_tensors="pt"))
            processed["pixel_values_videos"] = pllava_frame_pixels(processor.image_processor, frames)[None]
        else:
            raise ValueError(
                f"the checkpoint's processor ({type(processor).__name__}) has neither a video nor an image processor; "
                "save the CLIP preprocessor_config.json of the checkpoint's base model beside it"
            )
        return expand_placeholder_run(processed, self.video_token_id, self.tokens_per_video)

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
        projected = self.multi_modal_projector(selected)  # [batch*frames, g*g, d_model]
        side = int(round(projected.shape[1] ** 0.5))
        if side * side != projected.shape[1]:
            raise ValueError(f"PLLaVA pools a square patch grid per frame; got {projected.shape[1]} patches")
        d_model = projected.shape[-1]
        video = projected.view(batch, frames, side, side, d_model).permute(0, 4, 1, 2, 3)  # b d t h w
        pooled = nn.functional.adaptive_avg_pool3d(video, self.pooling_shape)
        embeddings = pooled.permute(0, 2, 3, 4, 1).reshape(-1, d_model)  # (b t h w) d
        t, h, w = self.pooling_shape
        grid = torch.stack(
            torch.meshgrid(torch.arange(batch * t), torch.arange(h), torch.arange(w), indexing="ij"), dim=-1
        ).reshape(-1, 3)
        return VideoFeatures(embeddings=embeddings, grid=grid)


def expand_placeholder_run(processed: dict[str, Any], token_id: int, count: int) -> dict[str, Any]:
    """Replace the one contiguous run of `token_id` in a one-sequence batch by `count` copies.

    Every other per-token output (e.g. `attention_mask`) is rewritten alike, repeating its value
    at the run; the tokens around the run are untouched.
    """
    ids = processed["input_ids"]
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"expected input_ids of one sequence [1, pos], got {tuple(ids.shape)}")
    where = torch.nonzero(ids[0] == token_id).flatten()
    if where.numel() == 0:
        return processed  # no placeholder: the caller's count check names the problem
    first, last = int(where[0]), int(where[-1]) + 1
    if where.numel() != last - first:
        raise ValueError(
            f"the processed prompt has {where.numel()} video placeholder tokens in more than one run "
            f"(positions {where.tolist()[:8]}...); write the placeholder once"
        )
    expanded = dict(processed)
    for key, value in processed.items():
        if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape == ids.shape:
            run = value[:, first : first + 1].expand(1, count)
            expanded[key] = torch.cat([value[:, :first], run, value[:, last:]], dim=1)
    return expanded


def pllava_frame_pixels(image_processor: Any, frames: np.ndarray) -> Float[torch.Tensor, "frames 3 crop crop"]:
    """Frames as PLLaVA's processor prepares one video: resized alike, then CLIP-processed one by one.

    PLLaVA (`PllavaProcessor.resize_crop_longshort`) first resizes every frame (bicubic, PIL) so
    its shortest edge is its own, capped so the longest edge stays within 640 px, but at least the
    CLIP resolution, and slices the long side to the clip's common size; then its
    `CLIPImageProcessor` resizes the shortest edge, centre-crops and normalises each frame. The
    size, crop, resample, rescale and mean/std are `image_processor`'s (a CLIP one, or a
    LLaVA-NeXT one, whose AnyRes tiling PLLaVA does not use).
    """
    from transformers.image_transforms import get_resize_output_image_size, resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    clip = _clip_image_processor(image_processor)
    resolution = clip.size["shortest_edge"]
    height, width = frames.shape[1:3]
    rate = max(height, width) / min(height, width)
    short = max(min(min(height, width), int(min(640, max(height, width)) / rate)), resolution)
    common_long = int(short * rate)
    resized = []
    for frame in frames:
        size = get_resize_output_image_size(
            frame, size=short, default_to_square=False, max_size=9999, input_data_format=ChannelDimension.LAST
        )
        image = resize(frame, size=size, resample=PILImageResampling.BICUBIC, input_data_format=ChannelDimension.LAST)
        start = ((max(image.shape[:2]) - common_long) // 2) // 2  # PLLaVA halves the overhang twice
        long_side = slice(start, start + common_long)
        resized.append(image[long_side] if image.shape[0] > image.shape[1] else image[:, long_side])
    return torch.as_tensor(clip(resized, return_tensors="pt")["pixel_values"])


def _clip_image_processor(image_processor: Any) -> Any:
    """A PIL CLIP image processor with `image_processor`'s resize, crop and normalisation settings."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    size = _as_dict(getattr(image_processor, "size", None))
    if not size.get("shortest_edge"):
        raise ValueError(
            f"PLLaVA resizes each frame's shortest edge, but the checkpoint's {type(image_processor).__name__} has "
            f"size {size}; its preprocessor_config.json needs a CLIP size {{'shortest_edge': N}}"
        )
    fields = ("do_resize", "resample", "do_center_crop", "do_rescale", "rescale_factor", "do_normalize",
              "image_mean", "image_std", "do_convert_rgb")
    settings = {name: getattr(image_processor, name) for name in fields if getattr(image_processor, name, None) is not None}
    crop = _as_dict(getattr(image_processor, "crop_size", None))
    if crop.get("height"):
        settings["crop_size"] = {"height": crop["height"], "width": crop["width"]}
    return CLIPImageProcessorPil(size={"shortest_edge": size["shortest_edge"]}, **settings)


def _as_dict(size: Any) -> dict[str, Any]:
    """A size setting (dict or transformers' SizeDict) as a plain dict of its set entries."""
    if size is None:
        return {}
    items = size.items() if hasattr(size, "items") else vars(size).items()
    return {key: value for key, value in items if value is not None}
