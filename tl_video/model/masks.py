"""The additive attention mask, built once per forward and shared by every layer.

0 means open and `finfo(dtype).min` means blocked. It is added to the scores (never a boolean,
which eager attention would add as 1.0). Blocked entries are set, not summed, so a key blocked
twice stays at finfo.min instead of overflowing to -inf. Attention reads a row whose every entry
is <= finfo.min as "attends to nothing" (zero output, see `attention.py`), never as the uniform
softmax over the row that the raw scores would give.

When nothing is padded and no key/value cache precedes the queries, the forward hands the layers a
`CausalMask` instead: a plain causal mask that is built only if something reads it (a hook on
`hook_attn_mask`, or eager attention). Otherwise attention runs the fused kernel's causal fast path
(`is_causal=True`, no [query, key] tensor at all), which is faster and keeps memory linear in length.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int

AdditiveMask = Float[torch.Tensor, "batch 1 query_pos key_pos"]


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


class CausalMask:
    """A plain causal mask over `n_tokens` queries and keys (no padding, no cached prefix), built on demand.

    Layers share one instance per forward, so the tensor is built at most once, and only when a hook
    or eager attention reads it; the fused kernel's causal path needs none.
    """

    def __init__(self, batch: int, n_tokens: int, dtype: torch.dtype, device: torch.device):
        self.batch, self.n_tokens, self.dtype, self.device = batch, n_tokens, dtype, device
        self._tensor: AdditiveMask | None = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.batch, 1, self.n_tokens, self.n_tokens))

    def tensor(self) -> AdditiveMask:
        """The additive mask itself (built once, then shared)."""
        if self._tensor is None:
            index = torch.arange(self.n_tokens, device=self.device)
            self._tensor = causal_mask(index, index, None, self.batch, self.dtype)
        return self._tensor

    def __repr__(self) -> str:
        return f"CausalMask(batch={self.batch}, n_tokens={self.n_tokens}, {self.dtype})"


def forward_mask(
    query_index: Int[torch.Tensor, "query_pos"],
    key_index: Int[torch.Tensor, "key_pos"],
    key_padding_mask: Int[torch.Tensor, "batch key_pos"] | None,
    batch: int,
    dtype: torch.dtype,
) -> AdditiveMask | CausalMask:
    """The mask a forward hands its layers: a lazy `CausalMask` when queries and keys are the same
    positions and no key is padding (the fused causal path may then skip it), else the tensor."""
    plain = (
        query_index.shape[0] == key_index.shape[0]
        and (key_padding_mask is None or bool(key_padding_mask.bool().all()))
    )
    if plain:
        return CausalMask(batch, query_index.shape[0], dtype, query_index.device)
    return causal_mask(query_index, key_index, key_padding_mask, batch, dtype)
