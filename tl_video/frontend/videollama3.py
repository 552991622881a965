"""VideoLLaMA3 front end: per-frame SigLIP-NaViT -> bilinear 2x downsampling -> projector -> pruning.

Matches what `VideoLlama3Model.forward` of transformers 5.24 (`models/video_llama_3/
modeling_video_llama_3.py`) splices into the placeholders: `cat(get_video_features(...)
.pooler_output)[video_compression_mask]`. The vision model (2D rotary attention inside each frame,
`post_layernorm`, then `pixel_unshuffle`, which is a bilinear `F.interpolate` of each frame's
(h, w) patch grid to (h/m, w/m)) and the `projector` are the checkpoint's own modules.

Token pruning ("token compression"): the video processor drops every merged token of frames
1..T-1 whose pixels barely differ from the previous frame (`_get_compression_mask`, threshold 0.1
on the mean absolute difference x 255; a frame keeps at least one token) and writes only the kept
placeholders into the text. The grid returned here lists exactly the (frame, row, col) of the kept
tokens, so the number and identity of video tokens depend on the video's content; clean and
corrupted inputs with different kept sets have different layouts and are refused by
`TokenLayout.check_same_as`. Turn pruning off with `frontend.token_pruning = False` (HF's switch:
the video processor's `use_token_compression`, also settable in `video_preprocessor_config.json`).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import nn

from tl_video.frontend.base import VideoFeatures, VideoFrontEnd


class VideoLlama3FrontEnd(VideoFrontEnd):
    family = "videollama3"
    # The processor writes `Time {index / fps:.1f}s:` from the `VideoTiming` that `prepare` passes
    # as `video_metadata`; without one it assumes 1 fps (VideoLlama3Processor.replace_video_token).
    default_fps = 1.0
    # The processor writes "Time t s:" before each frame's tokens and "," between frames; each
    # belongs to the group of the frame that follows it (as in the reference analyses), so a
    # cross-frame knockout leaves no text path between frames.
    inserted_text = "next_frame"

    def __init__(
        self,
        vision_model: nn.Module,
        projector: nn.Module,
        video_token_id: int,
        video_placeholder: str,
        video_processor: Any = None,
    ):
        super().__init__()
        self.vision_model = vision_model
        self.projector = projector
        self.video_token_id = video_token_id
        self.video_placeholder = video_placeholder
        self._video_processor = video_processor  # holds HF's pruning switch; not a module

    @property
    def token_pruning(self) -> bool:
        """Whether the processor drops near-static tokens (HF `use_token_compression`)."""
        return bool(getattr(self._video_processor, "use_token_compression", True))

    @token_pruning.setter
    def token_pruning(self, enabled: bool) -> None:
        if self._video_processor is None:
            raise ValueError("this front end was built without a video processor; pruning is decided by the processor")
        self._video_processor.use_token_compression = bool(enabled)

    def video_inputs(self, processed: dict[str, Any]) -> dict[str, torch.Tensor]:
        names = ("pixel_values_videos", "video_grid_thw", "video_merge_sizes", "video_compression_mask")
        missing = [name for name in names if name not in processed]
        if missing:
            raise ValueError(f"the VideoLLaMA3 processor returned no {', '.join(missing)}; was a video passed?")
        return {name: processed[name] for name in names}

    @torch.no_grad()
    def encode(
        self,
        pixel_values_videos: Float[torch.Tensor, "n_patches patch_dim"],
        video_grid_thw: Int[torch.Tensor, "n_videos 3"],
        video_merge_sizes: Int[torch.Tensor, "n_videos"],
        video_compression_mask: Bool[torch.Tensor, "n_merged"],
    ) -> VideoFeatures:
        dtype = next(self.vision_model.parameters()).dtype
        merged = self.vision_model(
            pixel_values=pixel_values_videos.to(dtype),
            grid_thw=video_grid_thw,
            merge_sizes=video_merge_sizes,
            return_dict=True,
        ).last_hidden_state  # [n_merged, d_vision], (frame, row, col) order, frames of all videos in turn
        projected = self.projector(merged)
        grid = _merged_grid(video_grid_thw, video_merge_sizes).to(projected.device)
        keep = video_compression_mask.to(projected.device, torch.bool)
        if keep.shape != (projected.shape[0],):
            raise ValueError(
                f"video_compression_mask has shape {tuple(keep.shape)} but the video has {projected.shape[0]} tokens"
            )
        return VideoFeatures(embeddings=projected[keep], grid=grid[keep])


def _merged_grid(
    grid_thw: Int[torch.Tensor, "n_videos 3"], merge_sizes: Int[torch.Tensor, "n_videos"]
) -> Int[torch.Tensor, "n_merged 3"]:
    """(frame, row, col) of every merged token before pruning; frames count on across videos."""
    grids, first_frame = [], 0
    for (t, h, w), merge in zip(grid_thw.tolist(), merge_sizes.tolist()):
        axes = torch.arange(first_frame, first_frame + t), torch.arange(h // merge), torch.arange(w // merge)
        grids.append(torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3))
        first_frame += t
    return torch.cat(grids)
