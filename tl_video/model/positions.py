"""Position ids from token ids alone, so `model(tokens)` needs nothing else.

1D: the running count of non-padding tokens (what HF's `generate` uses), offset by a cache.
"""

from __future__ import annotations

import torch
from jaxtyping import Int


def sequential_position_ids(
    attention_mask: Int[torch.Tensor, "batch pos"] | None,
    batch: int,
    length: int,
    device: torch.device,
    start: Int[torch.Tensor, "batch"] | None = None,
) -> Int[torch.Tensor, "batch pos"]:
    """0, 1, 2, ... per row; left padding does not advance the count; `start` continues a cache."""
    if attention_mask is None:
        positions = torch.arange(length, device=device).expand(batch, length)
    else:
        mask = attention_mask.to(device).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if start is not None:
        positions = positions + start.to(device)[:, None]
    return positions
