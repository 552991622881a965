"""Attention from chosen query tokens to the video, as frames x rows x cols (METHODS.md, "Attention maps")."""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float

from tl_video.interventions.knockout import KnockoutSpec, knockout_hooks
from tl_video.interventions.windows import checked_layers
from tl_video.prompts.prepared import PreparedInput


@torch.no_grad()
def video_attention_map(
    model: Any,
    prepared: PreparedInput,
    query: str,
    layers: list[int] | range | None = None,
    *,
    heads: Literal["mean", "max"] = "mean",
    knockout: KnockoutSpec | None = None,
) -> Float[torch.Tensor, "layer frame row col"]:
    """Attention of the `query` group (averaged over its tokens) to every video token.

    Heads are averaged (`heads="mean"`) or maxed; cells of the (frame, row, col) grid without a
    token are NaN. With `knockout`, the map is computed under that knockout.
    """
    if heads not in ("mean", "max"):
        raise ValueError(f"heads={heads!r}; expected 'mean' or 'max'")
    n_layers = model.cfg.n_layers
    layers = checked_layers(layers, n_layers, "attention map")
    layout = prepared.layout
    queries = layout.positions(query)
    keys = layout.positions("video")
    if queries.numel() == 0 or keys.numel() == 0:
        raise ValueError(f"query group {query!r} or the video selects no token")
    names = {f"blocks.{layer}.attn.hook_pattern" for layer in layers}
    hooks = [] if knockout is None else knockout_hooks(knockout, layout, n_layers)
    with model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(prepared.tokens, names_filter=lambda name: name in names)
    per_layer = []
    for layer in layers:
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0].float()  # [head, query, key]
        to_video = pattern[:, queries][:, :, keys].mean(1)  # [head, video_token]
        per_layer.append(to_video.mean(0) if heads == "mean" else to_video.max(0).values)
    return layout.on_video_grid(torch.stack(per_layer).cpu())
