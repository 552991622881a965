"""Attention from chosen query tokens to the video, as frames x rows x cols (docs/methods.md, "Attention maps")."""

from __future__ import annotations

from dataclasses import dataclass
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
    attention = query_attention_to_video(model, prepared, query, layers, heads=heads, knockout=knockout)
    return prepared.layout.on_video_grid(attention.group)


@dataclass(frozen=True)
class QueryAttention:
    """Attention of a query group to the video in chosen layers, per query token and for the group."""

    layers: tuple[int, ...]
    query_positions: tuple[int, ...]  # sequence index of each query token
    per_token: Float[torch.Tensor, "layer query video_token"]  # head mean (or max) per query token
    group: Float[torch.Tensor, "layer video_token"]  # mean over the query tokens, then heads (as video_attention_map)
    video_mass: Float[torch.Tensor, "layer query"]  # head-mean attention of each query token summed over all video keys


@torch.no_grad()
def query_attention_to_video(
    model: Any,
    prepared: PreparedInput,
    query: str,
    layers: list[int] | range | None = None,
    *,
    heads: Literal["mean", "max"] = "mean",
    knockout: KnockoutSpec | None = None,
) -> QueryAttention:
    """One forward pass: the `query` group's attention to every video token, per query token and for the group.

    ``group`` equals `video_attention_map` before it is put on the (frame, row, col) grid; the
    per-token maps are the reference's one-map-per-query-token view. ``video_mass`` is the share
    of a query token's attention (head mean) that lands on the video.
    """
    if heads not in ("mean", "max"):
        raise ValueError(f"heads={heads!r}; expected 'mean' or 'max'")
    n_layers = model.cfg.n_layers
    layers = checked_layers(layers, n_layers, "attention map")
    layout = prepared.layout
    queries, keys = layout.positions(query, role="attention query"), layout.positions("video_tokens")
    if queries.numel() == 0 or keys.numel() == 0:
        raise ValueError(f"query group {query!r} or the video selects no token")
    to_video: dict[int, torch.Tensor] = {}  # layer -> [head, query, video_token], float32

    def keep_query_rows(layer: int):
        def hook(pattern: torch.Tensor, hook: Any) -> None:
            # only the query rows and video columns are kept, as the layer runs: never every layer's
            # [head, pos, pos] pattern at once (100 GiB on a 72B model at 3,236 tokens, docs/memory.md)
            rows = pattern[0][:, queries.to(pattern.device)]
            to_video[layer] = rows[:, :, keys.to(pattern.device)].float()
        return hook

    hooks = [] if knockout is None else knockout_hooks(knockout, layout, n_layers)
    hooks += [(f"blocks.{layer}.attn.hook_pattern", keep_query_rows(layer)) for layer in layers]
    with model.hooks(fwd_hooks=hooks):
        model(prepared.tokens, return_type=None)
    per_token, group, mass = [], [], []
    for layer in layers:
        attention = to_video.pop(layer).cpu()  # [head, query, video_token]
        per_token.append(attention.mean(0) if heads == "mean" else attention.max(0).values)
        group.append(attention.mean(1).mean(0) if heads == "mean" else attention.mean(1).max(0).values)
        mass.append(attention.mean(0).sum(-1))
    return QueryAttention(
        layers=tuple(layers), query_positions=tuple(queries.tolist()),
        per_token=torch.stack(per_token), group=torch.stack(group), video_mass=torch.stack(mass),
    )
