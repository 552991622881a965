"""Attention from chosen query tokens to the video, as frames x rows x cols (METHODS.md, "Attention maps")."""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float

from tl_video.interventions.knockout import KnockoutSpec, knockout_hooks
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
    layers = list(range(n_layers)) if layers is None else list(layers)
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} are out of range for a model with {n_layers} layers")
    layout = prepared.layout
    queries = layout.positions(query)
    keys = layout.positions("video")
    if queries.numel() == 0 or keys.numel() == 0:
        raise ValueError(f"query group {query!r} or the video selects no token")
    names = {f"blocks.{layer}.attn.hook_pattern" for layer in layers}
    hooks = [] if knockout is None else knockout_hooks(knockout, layout, n_layers)
    with model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(prepared.tokens, names_filter=lambda name: name in names)
    grid = torch.tensor(layout.video_grid)
    frames, rows, cols = (int(grid[:, axis].max()) + 1 for axis in range(3))
    maps = torch.full((len(layers), frames, rows, cols), float("nan"))
    for index, layer in enumerate(layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0].float()  # [head, query, key]
        to_video = pattern[:, queries][:, :, keys].mean(1)  # [head, video_token]
        reduced = to_video.mean(0) if heads == "mean" else to_video.max(0).values
        maps[index, grid[:, 0], grid[:, 1], grid[:, 2]] = reduced.cpu()
    return maps
