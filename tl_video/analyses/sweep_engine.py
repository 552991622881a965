"""Exact knockout sweeps that recompute only what a knockout can change.

A knockout spec first blocks an edge in layer L0, and its earliest blocked query is q0 (both
read from `blocked_edges_by_layer`, so positions come from the layout). Under causal attention:

- every layer below L0 equals the clean run, at every position;
- positions before q0 never change in any layer (their rows of the mask are untouched, and
  they only read keys at or before themselves).

So the engine runs the clean pass once, keeping the residual entering each layer and every
layer's keys/values (`KeyValueCache`), and per spec resumes at layer L0 with only the positions
q0.. as queries, against the cached clean keys/values of positions < q0. Optionally
(`max_batch` > 1) specs sharing q0 run as one batch, each batch row under its own blocked edges
(a mask hook per layer with one row set per spec). The hooks see the same [query, key] geometry as in KV-cache generation (queries q0..n-1
over keys 0..n-1), so the blocked rows and the fully-blocked-row rule are those of the full
forward. Position ids are the clean pass's own (a slice), so M-RoPE (3D ids) is exact; Qwen3-VL's
deepstack features are placed from the suffix's tokens in the layers the resumed pass runs.

Blocked entries above the diagonal are ignored when finding L0 and q0: the causal mask already
blocks them, so they change nothing. A spec that blocks no causal edge returns the clean
probabilities. Numbers equal the plain full forward up to float reassociation (tested within
1e-5 in fp32, tests/test_sweep_engine.py).

`sweep_work` counts the (query position, layer) pairs a call recomputes against the least an exact
knockout needs (`SweepWork`); `benchmarks/run.py` prints it for each sweep.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from jaxtyping import Bool, Float, Int

from tl_video.interventions.knockout import KnockoutSpec, blocked_edges_by_layer
from tl_video.model.kv_cache import KeyValueCache, LayerKeyValues
from tl_video.model.masks import block_edges
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
    with _temporary_hooks(model, hooks):
        residual = model(tokens, past_kv_cache=cache, stop_at_layer=n_layers)
    logits = model.final_logits(residual[:, -1:])  # only the last position is read
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


@dataclass(frozen=True)
class _Resume:
    """One spec's resumed pass: its index in the caller's list, start point and blocked matrices."""

    index: int
    start: StartPoint
    blocked: dict[int, Bool[torch.Tensor, "query_pos key_pos"]]


class _ReadOnlyLayers(list):
    """Cache layers the resumed pass reads but never keeps: the forward's write-back of each layer's
    extended keys/values is dropped, so memory holds one layer's copy at a time, not all of them."""

    def __setitem__(self, index: Any, value: Any) -> None:
        pass


def _prefix_cache(clean: CleanPass, query: int, batch: int) -> KeyValueCache | None:
    """The clean keys/values of positions < `query`, broadcast to `batch` rows (None when query is 0)."""
    if query == 0:
        return None
    prefix = clean.cache.prefix(query)
    layers = [None if kv is None else LayerKeyValues(kv.keys.expand(batch, -1, -1, -1), kv.values.expand(batch, -1, -1, -1))
              for kv in prefix.layers]
    return KeyValueCache(_ReadOnlyLayers(layers), prefix.key_padding_mask, prefix.position_ids)


def _batched_mask_hook(rows: Bool[torch.Tensor, "batch 1 query_pos key_pos"]) -> Callable[..., torch.Tensor]:
    """Block each batch row's own edges (queries from q0 on, every key), as `_mask_hook` does for one spec."""
    on_device: dict[torch.device, torch.Tensor] = {}

    def hook(mask: torch.Tensor, hook: Any) -> torch.Tensor:
        if mask.shape[0] != rows.shape[0] or mask.shape[-2:] != rows.shape[-2:]:
            raise ValueError(
                f"sweep engine: the mask at {getattr(hook, 'name', None)} is {tuple(mask.shape)}, but the batched knockout "
                f"rows are {tuple(rows.shape)}; these hooks serve only the engine's own resumed pass"
            )
        if mask.device not in on_device:
            on_device[mask.device] = rows.to(mask.device)
        return block_edges(mask, on_device[mask.device])

    return hook


def _batched_hooks(group: list[_Resume], first_layer: int, query: int, n_layers: int) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    """One mask hook per layer that any spec of the group blocks; rows are each spec's matrix from `query` on."""
    hooks, shared = [], {}
    for layer in range(first_layer, n_layers):
        matrices = [resume.blocked.get(layer) for resume in group]
        if all(matrix is None for matrix in matrices):
            continue
        signature = tuple(None if matrix is None else id(matrix) for matrix in matrices)
        if signature not in shared:
            n_keys = next(matrix for matrix in matrices if matrix is not None).shape[1]
            rows = torch.zeros(len(group), 1, n_keys - query, n_keys, dtype=torch.bool)
            for row, matrix in enumerate(matrices):
                if matrix is not None:
                    rows[row, 0] = matrix[query:]
            shared[signature] = rows
        hooks.append((f"blocks.{layer}.attn.hook_attn_mask", _batched_mask_hook(shared[signature])))
    return hooks


@contextmanager
def _temporary_hooks(model: Any, hooks: list[tuple[str, Callable[..., torch.Tensor]]]) -> Iterator[None]:
    """Forward hooks on the named hook points for one resumed pass, removed by handle afterwards
    (TransformerLens's `model.hooks()` resets every hook point of the model on exit, which costs
    more than a one-position pass itself)."""
    handles = []
    try:
        for name, fn in hooks:
            point = model.hook_dict[name]
            handles.append(point.register_forward_hook(lambda module, inputs, output, fn=fn, point=point: fn(output, hook=point)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _resume_group(
    model: Any, clean: CleanPass, tokens: Int[torch.Tensor, "1 pos"], group: list[_Resume]
) -> Float[torch.Tensor, "group d_vocab"]:
    """One forward for specs sharing their earliest blocked query, from the group's first blocked layer.

    A spec whose own first blocked layer is later just has no hook in the layers before it, where
    its rows then recompute the clean values."""
    n_layers, batch = model.cfg.n_layers, len(group)
    query = group[0].start.query
    first_layer = min(resume.start.layer for resume in group)
    with _temporary_hooks(model, _batched_hooks(group, first_layer, query, n_layers)):
        residual = model(
            clean.residuals[first_layer][:, query:].expand(batch, -1, -1), start_at_layer=first_layer,
            stop_at_layer=n_layers, past_kv_cache=_prefix_cache(clean, query, batch),
            position_ids=clean.cache.position_ids[..., query:], tokens=tokens[:, query:].expand(batch, -1),
        )
    logits = model.final_logits(residual[:, -1:])
    return logits[:, -1].float().softmax(-1).cpu()


@dataclass(frozen=True)
class SweepPlan:
    """Which resumed passes a call runs: chunks of specs (one forward each) and the specs equal to clean."""

    chunks: list[list[_Resume]]
    unchanged: list[int]  # indices of specs that block no causal edge (the clean probabilities)


def plan_sweep(
    specs: Sequence[KnockoutSpec], layout: Any, n_layers: int, max_batch: int = 1, short_suffix: int = 16
) -> SweepPlan:
    """Group specs into resumed passes (see `engine_probabilities` for the batching rule)."""
    n_tokens = layout.n_tokens
    unchanged: list[int] = []
    groups: dict[tuple[int, ...], list[_Resume]] = {}
    for index, spec in enumerate(specs):
        blocked = blocked_edges_by_layer(spec, layout, n_layers)
        start = start_point(blocked)
        if start is None:
            unchanged.append(index)
            continue
        key = (start.query,) if n_tokens - start.query <= short_suffix else (start.query, start.layer)
        groups.setdefault(key, []).append(_Resume(index, start, blocked))
    chunks = [group[offset:offset + max_batch] for group in groups.values() for offset in range(0, len(group), max_batch)]
    return SweepPlan(chunks, unchanged)


def engine_probabilities(
    model: Any,
    prepared: PreparedInput,
    specs: Sequence[KnockoutSpec],
    max_batch: int = 1,
    short_suffix: int = 16,
) -> Float[torch.Tensor, "spec d_vocab"]:
    """`knockout_probabilities` by the exact engine: one clean pass, then the specs resumed in batches.

    Specs are batched when they share the earliest blocked query and either the first blocked layer
    or a short suffix (<= `short_suffix` positions, where starting a few layers early costs little);
    at most `max_batch` per forward (each row holds a copy of one layer's keys/values at a time).
    With `max_batch=1` (the default) each spec runs alone from its own start point, so its numbers
    do not depend on the other specs of the call (a resumed sweep reproduces an uninterrupted one).
    """
    n_specs = len(specs)
    if not n_specs:
        return torch.zeros(0, model.cfg.d_vocab)
    tokens = prepared.tokens.to(model.W_E.device)
    plan = plan_sweep(specs, prepared.layout, model.cfg.n_layers, max_batch, short_suffix)
    clean = clean_pass(model, tokens)
    rows: list[torch.Tensor | None] = [None] * n_specs
    for index in plan.unchanged:
        rows[index] = clean.probabilities.clone()
    for chunk in plan.chunks:
        for resume, row in zip(chunk, _resume_group(model, clean, tokens, chunk)):
            rows[resume.index] = row
    return torch.stack(rows)


@dataclass(frozen=True)
class SweepWork:
    """(query position, layer) pairs computed by a sweep, against the least an exact knockout needs.

    `done`: what the engine's resumed passes recompute (every batch row counts). `minimum`: per spec,
    from its first blocked layer on, the positions whose value can differ from the clean run (its
    blocked query rows, and every position at or after an earlier-changed one, since attention is
    causal). `clean`: the one clean pass (every position x every layer), shared by all specs.
    """

    done: int
    minimum: int
    clean: int

    @property
    def ratio(self) -> float:
        return self.done / self.minimum if self.minimum else float("nan")


def sweep_work(
    specs: Sequence[KnockoutSpec], layout: Any, n_layers: int, max_batch: int = 1, short_suffix: int = 16
) -> SweepWork:
    """The work `engine_probabilities` does for these specs, and the minimum (see `SweepWork`)."""
    n_tokens = layout.n_tokens
    plan = plan_sweep(specs, layout, n_layers, max_batch, short_suffix)
    done = sum(
        len(chunk) * (n_tokens - chunk[0].start.query) * (n_layers - min(r.start.layer for r in chunk))
        for chunk in plan.chunks
    )
    minimum = sum(changed_positions(resume.blocked, n_tokens, n_layers) for chunk in plan.chunks for resume in chunk)
    return SweepWork(done=done, minimum=minimum, clean=n_tokens * n_layers)


def changed_positions(blocked: dict[int, Bool[torch.Tensor, "query_pos key_pos"]], n_tokens: int, n_layers: int) -> int:
    """(position, layer) pairs whose value can differ from the clean run under these blocked edges."""
    index = torch.arange(n_tokens)
    first_changed: int | None = None
    total = 0
    rows_of: dict[int, torch.Tensor] = {}
    for layer in range(n_layers):
        changed = torch.zeros(n_tokens, dtype=torch.bool)
        matrix = blocked.get(layer)
        if matrix is not None:
            if id(matrix) not in rows_of:
                rows_of[id(matrix)] = matrix.tril().any(dim=-1)
            changed |= rows_of[id(matrix)]
        if first_changed is not None:
            changed |= index >= first_changed
        if bool(changed.any()):
            total += int(changed.sum())
            first = int(torch.nonzero(changed)[0])
            first_changed = first if first_changed is None else min(first_changed, first)
    return total


def has_active_hooks(model: Any) -> bool:
    """Whether any hook is registered on the model (the engine then falls back to the plain path,
    since a user hook may read whole-sequence activations the engine never computes)."""
    return any(point.fwd_hooks or point.bwd_hooks for point in model.hook_dict.values())
