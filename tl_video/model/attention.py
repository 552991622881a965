"""Grouped-query self-attention with TransformerLens hook points.

Weights use TransformerLens's layout (`W_Q [head_index d_model d_head]`, `W_O [head_index d_head
d_model]`). The additive mask (0 = open, finfo.min = blocked) arrives built once per forward and
passes through `hook_attn_mask`, so a knockout edits the mask, not the scores. Scores and pattern
are materialised only when a hook reads them (or `attn_implementation="eager"`); otherwise the
fused SDPA kernel runs on the very same mask. When the forward passes a `CausalMask` (nothing
padded, no cached prefix) and no hook is registered on `hook_attn_mask`, the fused kernel runs its
causal fast path (`is_causal=True`) and no mask tensor is built; a hook on `hook_attn_mask` (a
knockout, or `run_with_cache`) or eager attention gets the built tensor, as before. Under an
explicit mask the fused kernel runs in chunks of query rows, each over the keys up to its last
query (`fused_masked_attention`), so it too skips most of the causal triangle's blocked half.

A query whose every key is blocked (each entry of its mask row <= finfo.min, read after
`hook_attn_mask`) attends to nothing: its pattern row is all zeros and its z is zero, so the
layer's attention output there is b_O alone. A plain softmax would instead spread it uniformly
over the whole row, future positions included. Padding query rows of a left-padded batch are
fully blocked too and get the same zero output.
"""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import nn
from transformer_lens.hook_points import HookPoint

from tl_video.model.config import VideoTransformerConfig
from tl_video.model.kv_cache import LayerKeyValues
from tl_video.model.masks import CausalMask
from tl_video.model.rms_norm import RMSNorm
from tl_video.model.rotary import apply_rotary

AttnInput = Float[torch.Tensor, "batch pos d_model"] | Float[torch.Tensor, "batch pos head_index d_model"]


class Attention(nn.Module):
    def __init__(self, cfg: VideoTransformerConfig):
        super().__init__()
        self.cfg = cfg
        n_heads, n_kv, d_model, d_head = cfg.n_heads, cfg.n_key_value_heads, cfg.d_model, cfg.d_head
        dtype = cfg.dtype
        self.W_Q = nn.Parameter(torch.empty(n_heads, d_model, d_head, dtype=dtype))
        self._W_K = nn.Parameter(torch.empty(n_kv, d_model, d_head, dtype=dtype))
        self._W_V = nn.Parameter(torch.empty(n_kv, d_model, d_head, dtype=dtype))
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model, dtype=dtype))
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head, dtype=dtype), requires_grad=cfg.attn_qkv_bias)
        self._b_K = nn.Parameter(torch.zeros(n_kv, d_head, dtype=dtype), requires_grad=cfg.attn_qkv_bias)
        self._b_V = nn.Parameter(torch.zeros(n_kv, d_head, dtype=dtype), requires_grad=cfg.attn_qkv_bias)
        self.b_O = nn.Parameter(torch.zeros(d_model, dtype=dtype), requires_grad=cfg.attn_out_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(d_head, cfg.eps, dtype)
            self.k_norm = RMSNorm(d_head, cfg.eps, dtype)
        self.scale = d_head**-0.5

        self.hook_q = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_k = HookPoint()  # [batch, pos, kv_head_index, d_head]
        self.hook_v = HookPoint()  # [batch, pos, kv_head_index, d_head]
        self.hook_rot_q = HookPoint()  # [batch, pos, head_index, d_head], after rotary
        self.hook_rot_k = HookPoint()  # [batch, pos, kv_head_index, d_head], after rotary
        self.hook_attn_mask = HookPoint()  # [batch, 1, query_pos, key_pos], additive
        self.hook_attn_scores = HookPoint()  # [batch, head_index, query_pos, key_pos], masked
        self.hook_pattern = HookPoint()  # [batch, head_index, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head_index, d_model], if use_attn_result

    # TransformerLens reads W_K / W_V with one slice per query head (as HookedTransformer's GQA does).
    @property
    def W_K(self) -> Float[torch.Tensor, "head_index d_model d_head"]:
        return self._W_K.repeat_interleave(self.cfg.n_query_groups, dim=0)

    @property
    def W_V(self) -> Float[torch.Tensor, "head_index d_model d_head"]:
        return self._W_V.repeat_interleave(self.cfg.n_query_groups, dim=0)

    @property
    def b_K(self) -> Float[torch.Tensor, "head_index d_head"]:
        return self._b_K.repeat_interleave(self.cfg.n_query_groups, dim=0)

    @property
    def b_V(self) -> Float[torch.Tensor, "head_index d_head"]:
        return self._b_V.repeat_interleave(self.cfg.n_query_groups, dim=0)

    def forward(
        self,
        query_input: AttnInput,
        key_input: AttnInput,
        value_input: AttnInput,
        cos: Float[torch.Tensor, "batch pos d_head"],
        sin: Float[torch.Tensor, "batch pos d_head"],
        mask: Float[torch.Tensor, "batch 1 query_pos key_pos"] | CausalMask,
        past: LayerKeyValues | None = None,
    ) -> tuple[Float[torch.Tensor, "batch pos d_model"], LayerKeyValues]:
        q = self.hook_q(_project(query_input, self.W_Q, self.b_Q))
        k = self.hook_k(_project(key_input, self._W_K, self._b_K))
        v = self.hook_v(_project(value_input, self._W_V, self._b_V))
        if self.cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = self.hook_rot_q(apply_rotary(q, cos, sin))
        k = self.hook_rot_k(apply_rotary(k, cos, sin))
        present = LayerKeyValues(k, v) if past is None else past.extended(k, v)
        if self.causal_fast_path(mask, past):
            z = self._attend_causal(q, present.keys, present.values)
        else:
            mask = self.hook_attn_mask(mask.tensor() if isinstance(mask, CausalMask) else mask)
            z = self._attend(q, present.keys, present.values, mask)
        z = self.hook_z(z)
        if self.cfg.use_attn_result:
            result = self.hook_result(einops.einsum(z, self.W_O, "b q h d, h d m -> b q h m"))
            out = result.sum(dim=2) + self.b_O
        else:  # one fused matmul + bias over (head, d_head), the same kernel as HF's o_proj
            out = F.linear(z.flatten(2), self.W_O.flatten(0, 1).T, self.b_O)
        return out, present

    def needs_pattern(self) -> bool:
        """Whether scores/pattern must be materialised (eager) rather than fused."""
        if self.cfg.attn_implementation != "auto":
            return self.cfg.attn_implementation == "eager"
        return self.hook_attn_scores.has_hooks() or self.hook_pattern.has_hooks()

    def causal_fast_path(self, mask: torch.Tensor | CausalMask, past: LayerKeyValues | None) -> bool:
        """Whether the fused causal kernel may run without a mask tensor: the mask is the plain
        causal one, nothing can edit or read it (no hook on `hook_attn_mask`), and no pattern is needed."""
        if not isinstance(mask, CausalMask) or (past is not None and past.length > 0):
            return False
        hook = self.hook_attn_mask
        return not (hook._forward_hooks or hook._forward_pre_hooks or hook.has_hooks()) and not self.needs_pattern()

    def _attend_causal(
        self,
        q: Float[torch.Tensor, "batch query_pos head_index d_head"],
        k: Float[torch.Tensor, "batch key_pos kv_head_index d_head"],
        v: Float[torch.Tensor, "batch key_pos kv_head_index d_head"],
    ) -> Float[torch.Tensor, "batch query_pos head_index d_head"]:
        """Fused causal attention with no mask tensor (every query sees itself: no fully blocked row)."""
        z = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            is_causal=True, scale=self.scale, enable_gqa=self.cfg.n_query_groups > 1,
        )
        return z.transpose(1, 2)

    def _attend(
        self,
        q: Float[torch.Tensor, "batch query_pos head_index d_head"],
        k: Float[torch.Tensor, "batch key_pos kv_head_index d_head"],
        v: Float[torch.Tensor, "batch key_pos kv_head_index d_head"],
        mask: Float[torch.Tensor, "batch 1 query_pos key_pos"],
    ) -> Float[torch.Tensor, "batch query_pos head_index d_head"]:
        """Softmax attention; fully blocked query rows attend to nothing (z = 0, pattern row 0)."""
        groups = self.cfg.n_query_groups
        q = q.transpose(1, 2)  # [batch, head, query_pos, d_head]
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # [batch, kv_head, key_pos, d_head]
        if not self.needs_pattern():
            return fused_masked_attention(q, k, v, mask.to(q.dtype), self.scale, groups > 1).transpose(1, 2)
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        # scaled and masked in place: one [query, key] tensor per head instead of three (autograd
        # keeps working: matmul saves its inputs, not its output)
        scores = self.hook_attn_scores(torch.matmul(q, k.transpose(2, 3)).mul_(self.scale).add_(mask))
        pattern = F.softmax(scores, dim=-1, dtype=torch.float32)
        fully_blocked = fully_blocked_queries(mask)
        if bool(fully_blocked.any()):
            pattern = pattern.masked_fill(fully_blocked, 0.0)
        pattern = self.hook_pattern(pattern.to(q.dtype))
        return torch.matmul(pattern, v).transpose(1, 2)


QUERY_CHUNK = 256  # query rows per fused call on the masked path


def fused_masked_attention(
    q: Float[torch.Tensor, "batch head_index query_pos d_head"],
    k: Float[torch.Tensor, "batch kv_head_index key_pos d_head"],
    v: Float[torch.Tensor, "batch kv_head_index key_pos d_head"],
    mask: Float[torch.Tensor, "batch 1 query_pos key_pos"],
    scale: float,
    enable_gqa: bool,
) -> Float[torch.Tensor, "batch head_index query_pos d_head"]:
    """SDPA under an explicit additive mask, fully blocked rows zeroed, in chunks of query rows.

    Queries are the last `query_pos` of the keys (as in a forward, or after a key/value cache). A
    chunk of queries ending at query e reads only keys up to e, so the kernel skips most of the
    causal triangle's blocked half, as its `is_causal` path does; this holds only while every entry
    right of a chunk's last query is blocked, which is checked (a hook may open future keys), and
    otherwise one call over every key runs. Reading each row's maximum in the same pass finds the
    fully blocked rows.
    """
    n_queries, n_keys = q.shape[2], k.shape[2]
    offset = n_keys - n_queries
    minimum = torch.finfo(mask.dtype).min
    bounds = [(start, min(n_queries, start + QUERY_CHUNK)) for start in range(0, n_queries, QUERY_CHUNK)]
    if offset >= 0 and len(bounds) > 1:
        row_max = []
        for start, end in bounds:
            keys_end = offset + end
            if keys_end < n_keys and bool(mask[..., start:end, keys_end:].amax() > minimum):
                break  # a future key is open in this chunk: one call over every key
            row_max.append(mask[..., start:end, :keys_end].amax(dim=-1, keepdim=True))
        else:
            z = torch.cat([
                F.scaled_dot_product_attention(
                    q[:, :, start:end], k[:, :, :offset + end], v[:, :, :offset + end],
                    attn_mask=mask[..., start:end, :offset + end], scale=scale, enable_gqa=enable_gqa,
                )
                for start, end in bounds
            ], dim=2)
            return z.masked_fill(torch.cat(row_max, dim=2) <= minimum, 0.0)
    z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=enable_gqa)
    return z.masked_fill(fully_blocked_queries(mask), 0.0)


def fully_blocked_queries(
    mask: Float[torch.Tensor, "batch 1 query_pos key_pos"],
) -> Bool[torch.Tensor, "batch 1 query_pos 1"]:
    """Query rows whose every key is blocked (entry <= finfo.min, or -inf) in the additive mask.

    One max-reduction over the row (no [query, key] boolean temporary)."""
    return mask.amax(dim=-1, keepdim=True) <= torch.finfo(mask.dtype).min


def _project(
    x: AttnInput,
    weight: Float[torch.Tensor, "head_index d_model d_head"],
    bias: Float[torch.Tensor, "head_index d_head"],
) -> Float[torch.Tensor, "batch pos head_index d_head"]:
    """x W + b per head; x is shared by all heads [b p m] or split per head [b p h m].

    The shared case is one fused matmul + bias (`F.linear`, the kernel HF's nn.Linear runs, so
    half precision rounds identically) with W viewed as [head_index*d_head, d_model]: a view (no
    copy) when W came from an HF `(h d) m` projection weight.
    """
    if x.ndim == 3:
        n_heads, d_model, d_head = weight.shape
        flat = weight.permute(1, 0, 2).reshape(d_model, n_heads * d_head)
        return F.linear(x, flat.T, bias.reshape(-1)).unflatten(-1, (n_heads, d_head))
    return einops.einsum(x, weight, "b p h m, h m d -> b p h d") + bias
