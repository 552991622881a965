"""The additive attention mask, built once per forward and shared by every layer.

0 means open and `finfo(dtype).min` means blocked. It is added to the scores (never a boolean,
which eager attention would add as 1.0). Blocked entries are set, not summed, so a key blocked
twice stays at finfo.min instead of overflowing to -inf. Attention reads a row whose every entry
is <= finfo.min as "attends to nothing" (zero output, see `attention.py`), never as the uniform
softmax over the row that the raw scores would give.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int


def additive_mask(
    allowed: Bool[torch.Tensor, "batch 1 query_pos key_pos"], dtype: torch.dtype
) -> Float[torch.Tensor, "batch 1 query_pos key_pos"]:
    blocked_value = torch.finfo(dtype).min
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, blocked_value)


def causal_mask(
    query_index: Int[torch.Tensor, "query_pos"],
    key_index: Int[torch.Tensor, "key_pos"],
    key_padding_mask: Int[torch.Tensor, "batch key_pos"] | None,
    batch: int,
    dtype: torch.dtype,
) -> Float[torch.Tensor, "batch 1 query_pos key_pos"]:
    """Each query sees keys at sequence index <= its own, except padding keys."""
    allowed = (key_index[None, :] <= query_index[:, None])[None, None]
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool()[:, None, None, :]
    allowed = allowed.expand(batch, 1, query_index.shape[0], key_index.shape[0])
    return additive_mask(allowed, dtype)


def block_edges(
    mask: Float[torch.Tensor, "batch 1 query_pos key_pos"],
    blocked: Bool[torch.Tensor, "query_pos key_pos"] | Bool[torch.Tensor, "batch 1 query_pos key_pos"],
) -> Float[torch.Tensor, "batch 1 query_pos key_pos"]:
    """Return the mask with the given (query, key) edges blocked, e.g. inside a knockout hook."""
    return mask.masked_fill(blocked, torch.finfo(mask.dtype).min)
