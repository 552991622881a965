"""SwiGLU MLP with TransformerLens's gated-MLP weights and hooks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn
from transformer_lens.hook_points import HookPoint
from transformers.activations import ACT2FN

from tl_video.model.config import VideoTransformerConfig


class GatedMLP(nn.Module):
    """out = (act(x W_gate + b_gate) * (x W_in + b_in)) W_out + b_out."""

    def __init__(self, cfg: VideoTransformerConfig):
        super().__init__()
        self.cfg = cfg
        d_model, d_mlp, dtype = cfg.d_model, cfg.d_mlp, cfg.dtype
        self.W_gate = nn.Parameter(torch.empty(d_model, d_mlp, dtype=dtype))
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp, dtype=dtype))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model, dtype=dtype))
        self.b_gate = nn.Parameter(torch.zeros(d_mlp, dtype=dtype), requires_grad=cfg.mlp_bias)
        self.b_in = nn.Parameter(torch.zeros(d_mlp, dtype=dtype), requires_grad=cfg.mlp_bias)
        self.b_out = nn.Parameter(torch.zeros(d_model, dtype=dtype), requires_grad=cfg.mlp_bias)
        self.act_fn = ACT2FN[cfg.act_fn]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp], gate pre-activation
        self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp], the linear (up) branch
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        # F.linear: the fused matmul + bias of HF's nn.Linear, so half precision rounds identically.
        pre = self.hook_pre(F.linear(x, self.W_gate.T, self.b_gate))
        pre_linear = self.hook_pre_linear(F.linear(x, self.W_in.T, self.b_in))
        post = self.hook_post(self.act_fn(pre) * pre_linear)
        return F.linear(post, self.W_out.T, self.b_out)
