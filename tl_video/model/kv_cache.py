"""Per-layer keys/values (after rotary) that later passes can reuse.

Used by `generate` and by passes that compute only some query positions against keys and
values computed before (the knockout speed-ups of ROADMAP.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int


@dataclass(frozen=True)
class LayerKeyValues:
    """Keys (rotated) and values of one layer, [batch, key_pos, kv_head_index, d_head]."""

    keys: Float[torch.Tensor, "batch key_pos kv_head_index d_head"]
    values: Float[torch.Tensor, "batch key_pos kv_head_index d_head"]

    def extended(self, keys: torch.Tensor, values: torch.Tensor) -> "LayerKeyValues":
        return LayerKeyValues(torch.cat([self.keys, keys], dim=1), torch.cat([self.values, values], dim=1))

    @property
    def length(self) -> int:
        return self.keys.shape[1]


@dataclass
class KeyValueCache:
    """Keys/values of every layer plus what positions need: the padding mask and the next position ids.

    Pass an empty cache to `forward(..., past_kv_cache=cache)`; it is filled in place and the
    next call continues from where it stopped.
    """

    layers: list[LayerKeyValues | None] = field(default_factory=list)
    key_padding_mask: Int[torch.Tensor, "batch key_pos"] | None = None
    position_ids: torch.Tensor | None = None  # of the cached keys: [batch key_pos] or [3 batch key_pos]

    @property
    def last_position_ids(self) -> torch.Tensor | None:
        """Position ids of the last cached key, [batch] or [3 batch]; the next pass continues after them."""
        return None if self.position_ids is None else self.position_ids[..., -1]

    def append_positions(self, position_ids: torch.Tensor) -> None:
        self.position_ids = position_ids if self.position_ids is None else torch.cat([self.position_ids, position_ids], -1)

    @classmethod
    def empty(cls, n_layers: int) -> "KeyValueCache":
        return cls(layers=[None] * n_layers)

    @property
    def length(self) -> int:
        first = self.layers[0] if self.layers else None
        return 0 if first is None else first.length

    def prefix(self, length: int) -> "KeyValueCache":
        """The cache of the first `length` positions, e.g. to recompute only a suffix of the input
        (from `start_at_layer`) against the keys and values of an earlier full run."""
        if not 0 < length <= self.length:
            raise ValueError(f"prefix length {length} must be in 1..{self.length}")
        layers = [None if kv is None else LayerKeyValues(kv.keys[:, :length], kv.values[:, :length]) for kv in self.layers]
        padding = None if self.key_padding_mask is None else self.key_padding_mask[:, :length]
        positions = None if self.position_ids is None else self.position_ids[..., :length]
        return KeyValueCache(layers, padding, positions)
