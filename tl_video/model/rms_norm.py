"""RMSNorm with TransformerLens's hook points (hook_scale, hook_normalized)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import nn
from transformer_lens.hook_points import HookPoint


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * w, computed in float32 like the HF reference."""

    def __init__(self, length: int, eps: float, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(length, dtype=dtype))
        self.hook_scale = HookPoint()  # [batch, pos, (head_index,) 1]
        self.hook_normalized = HookPoint()  # [batch, pos, (head_index,) length], before the gain

    def forward(self, x: Float[torch.Tensor, "... length"]) -> Float[torch.Tensor, "... length"]:
        input_dtype = x.dtype
        x = x.to(torch.float32)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        normalized = self.hook_normalized((x / scale).to(input_dtype))  # cached in the model's dtype
        return normalized * self.w
