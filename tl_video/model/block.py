"""One pre-norm decoder block: resid_pre -> +attn -> resid_mid -> +mlp -> resid_post."""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from torch import nn
from transformer_lens.hook_points import HookPoint

from tl_video.model.attention import Attention
from tl_video.model.config import VideoTransformerConfig
from tl_video.model.kv_cache import LayerKeyValues
from tl_video.model.mlp import GatedMLP
from tl_video.model.rms_norm import RMSNorm


class TransformerBlock(nn.Module):
    # TransformerLens's logit lens requires that resid_post is the whole residual stream.
    hook_out_is_single_residual_stream = True

    def __init__(self, cfg: VideoTransformerConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        self.ln1 = RMSNorm(cfg.d_model, cfg.eps, cfg.dtype)
        self.attn = Attention(cfg)
        self.ln2 = RMSNorm(cfg.d_model, cfg.eps, cfg.dtype)
        self.mlp = GatedMLP(cfg)
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_in = HookPoint()  # [batch, pos, head_index, d_model], if use_attn_in
        self.hook_q_input = HookPoint()  # [batch, pos, head_index, d_model], if use_split_qkv_input
        self.hook_k_input = HookPoint()  # [batch, pos, kv_head_index, d_model], if use_split_qkv_input
        self.hook_v_input = HookPoint()  # [batch, pos, kv_head_index, d_model], if use_split_qkv_input
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.hook_mlp_in = HookPoint()  # [batch, pos, d_model], if use_hook_mlp_in
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_video_injection = HookPoint()  # [batch, video_pos, d_model], features added to video rows
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(
        self,
        resid_pre: Float[torch.Tensor, "batch pos d_model"],
        cos: Float[torch.Tensor, "batch pos d_head"],
        sin: Float[torch.Tensor, "batch pos d_head"],
        mask: Float[torch.Tensor, "batch 1 query_pos key_pos"],
        past: LayerKeyValues | None = None,
        video_injection: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[Float[torch.Tensor, "batch pos d_model"], LayerKeyValues]:
        """`video_injection` = (video mask [batch pos], features [batch video_pos d_model]) is added
        to the video rows after the MLP (Qwen3-VL's deepstack), before `hook_resid_post`."""
        resid_pre = self.hook_resid_pre(resid_pre)
        query_input, key_input, value_input = self._attention_inputs(resid_pre)
        attn_out, present = self.attn(
            self.ln1(query_input), self.ln1(key_input), self.ln1(value_input), cos, sin, mask, past
        )
        attn_out = self.hook_attn_out(attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_in = self.hook_mlp_in(resid_mid.clone()) if self.cfg.use_hook_mlp_in else resid_mid
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(mlp_in)))
        resid_post = resid_mid + mlp_out
        if video_injection is not None:
            video_mask, features = video_injection
            features = self.hook_video_injection(features)
            added = torch.zeros_like(resid_post).masked_scatter(video_mask[..., None], features.reshape(-1, features.shape[-1]))
            resid_post = resid_post + added
        resid_post = self.hook_resid_post(resid_post)
        return resid_post, present

    def _attention_inputs(self, resid_pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The residual itself, or per-head copies when TransformerLens's input switches are on."""
        cfg = self.cfg
        if cfg.use_attn_in:
            if cfg.n_key_value_heads != cfg.n_heads:
                raise ValueError(
                    "use_attn_in needs one key/value head per query head; this model uses grouped-query "
                    f"attention ({cfg.n_heads} query, {cfg.n_key_value_heads} key/value heads). "
                    "Use set_use_split_qkv_input(True) instead."
                )
            attn_in = self.hook_attn_in(_per_head(resid_pre, cfg.n_heads))
            return attn_in, attn_in, attn_in
        if cfg.use_split_qkv_input:
            return (
                self.hook_q_input(_per_head(resid_pre, cfg.n_heads)),
                self.hook_k_input(_per_head(resid_pre, cfg.n_key_value_heads)),
                self.hook_v_input(_per_head(resid_pre, cfg.n_key_value_heads)),
            )
        return resid_pre, resid_pre, resid_pre


def _per_head(x: Float[torch.Tensor, "batch pos d_model"], n_heads: int) -> Float[torch.Tensor, "batch pos head_index d_model"]:
    return einops.repeat(x, "b p m -> b p h m", h=n_heads).clone()
