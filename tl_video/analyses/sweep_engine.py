"""Exact knockout sweeps that recompute only what a knockout can change.

A knockout spec first blocks an edge in layer L0, and its earliest blocked query is q0 (both
read from `blocked_edges_by_layer`, so positions come from the layout). Under causal attention:

- every layer below L0 equals the clean run, at every position;
- positions before q0 never change in any layer (their rows of the mask are untouched, and
  they only read keys at or before themselves).

So the engine runs the clean pass once, keeping the residual entering each layer and every
layer's keys/values (`KeyValueCache`), and per spec resumes at layer L0 with only the positions
q0.. as queries, against the cached clean keys/values of positions < q0, under the spec's own
knockout hooks. The hooks see the same [query, key] geometry as in KV-cache generation (queries
q0..n-1 over keys 0..n-1), so their rows and the fully-blocked-row rule are those of the full
forward. Position ids are the clean pass's own (a slice), so M-RoPE (3D ids) is exact; Qwen3-VL's
deepstack features are placed from the suffix's tokens in the layers the resumed pass runs.

Blocked entries above the diagonal are ignored when finding L0 and q0: the causal mask already
blocks them, so they change nothing. A spec that blocks no causal edge returns the clean
probabilities. Numbers equal the plain full forward up to float reassociation (tested within
1e-5 in fp32, tests/test_sweep_engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Bool, Float, Int

from tl_video.interventions.knockout import KnockoutSpec, blocked_edges_by_layer, knockout_hooks
from tl_video.model.kv_cache import KeyValueCache
from tl_video.prompts.prepared import PreparedInput


@dataclass(frozen=True)
class CleanPass:
    """What every knockout of one input reuses: residuals entering each layer, keys/values, clean output."""

    residuals: list[Float[torch.Tensor, "1 pos d_model"]]  # entering layer 0..n_layers-1
    cache: KeyValueCache  # keys/values of every layer and the position ids of every position
    probabilities: Float[torch.Tensor, "d_vocab"]  # clean softmax at the last position (float32, CPU)


@dataclass(frozen=True)
class StartPoint:
    """Where a spec's forward first differs from the clean run: the layer and the query position."""

    layer: int
    query: int


def clean_pass(model: Any, tokens: Int[torch.Tensor, "1 pos"]) -> CleanPass:
    """One unhooked forward that records the residual entering each layer and fills a key/value cache."""
    n_layers = model.cfg.n_layers
    residuals: list[torch.Tensor | None] = [None] * n_layers

    def keep(layer: int):
        def hook(resid: torch.Tensor, hook: Any) -> None:
            residuals[layer] = resid.detach()
        return hook

    cache = KeyValueCache.empty(n_layers)
    hooks = [(f"blocks.{layer}.hook_resid_pre", keep(layer)) for layer in range(n_layers)]
    with model.hooks(fwd_hooks=hooks):
        logits = model(tokens, past_kv_cache=cache)
    return CleanPass(residuals, cache, logits[0, -1].float().softmax(-1).cpu())


def start_point(blocked: dict[int, Bool[torch.Tensor, "query_pos key_pos"]]) -> StartPoint | None:
    """First layer with a blocked causal edge and the earliest blocked query from that layer on (None: nothing blocked)."""
    first_rows: dict[int, int] = {}
    seen: dict[int, int | None] = {}
    for layer, matrix in blocked.items():
        if id(matrix) not in seen:
            rows = torch.nonzero(matrix.tril().any(dim=-1)).flatten()
            seen[id(matrix)] = int(rows[0]) if rows.numel() else None
        if seen[id(matrix)] is not None:
            first_rows[layer] = seen[id(matrix)]
    if not first_rows:
        return None
    return StartPoint(layer=min(first_rows), query=min(first_rows.values()))


def resumed_probabilities(
    model: Any, clean: CleanPass, tokens: Int[torch.Tensor, "1 pos"], spec: KnockoutSpec, layout: Any
) -> Float[torch.Tensor, "d_vocab"]:
    """Softmax at the last position under `spec`, recomputing only layers >= L0 at positions >= q0."""
    n_layers = model.cfg.n_layers
    blocked = blocked_edges_by_layer(spec, layout, n_layers)
    start = start_point(blocked)
    if start is None:
        return clean.probabilities.clone()
    query = start.query
    past = clean.cache.prefix(query) if query > 0 else None
    position_ids = clean.cache.position_ids[..., query:]
    with model.hooks(fwd_hooks=knockout_hooks(spec, layout, n_layers)):
        residual = model(
            clean.residuals[start.layer][:, query:], start_at_layer=start.layer, stop_at_layer=n_layers,
            past_kv_cache=past, position_ids=position_ids, tokens=tokens[:, query:],
        )
    logits = model.unembed(model.ln_final(residual[:, -1:]))
    return logits[0, -1].float().softmax(-1).cpu()


def engine_probabilities(
    model: Any, prepared: PreparedInput, specs: Sequence[KnockoutSpec]
) -> Float[torch.Tensor, "spec d_vocab"]:
    """`knockout_probabilities` by the exact engine: one clean pass, then each spec from its start point."""
    if not specs:
        return torch.zeros(0, model.cfg.d_vocab)
    tokens = prepared.tokens.to(model.W_E.device)
    clean = clean_pass(model, tokens)
    return torch.stack([resumed_probabilities(model, clean, tokens, spec, prepared.layout) for spec in specs])


def has_active_hooks(model: Any) -> bool:
    """Whether any hook is registered on the model (the engine then falls back to the plain path,
    since a user hook may read whole-sequence activations the engine never computes)."""
    return any(point.fwd_hooks or point.bwd_hooks for point in model.hook_dict.values())
