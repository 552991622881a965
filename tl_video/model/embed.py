"""Token embedding and unembedding in TransformerLens's layout."""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from torch import nn

from tl_video.model.config import VideoTransformerConfig


class Embed(nn.Module):
    def __init__(self, cfg: VideoTransformerConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[torch.Tensor, "n"]) -> Float[torch.Tensor, "n d_model"]:
        return self.W_E[tokens]


class Unembed(nn.Module):
    def __init__(self, cfg: VideoTransformerConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab, dtype=cfg.dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab, dtype=cfg.dtype), requires_grad=False)

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        return einops.einsum(x, self.W_U, "b p m, m v -> b p v") + self.b_U
