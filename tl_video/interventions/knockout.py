"""Attention knockout: remove chosen query->key edges before the softmax, in chosen layers.

A spec is data: a tuple of `EdgeBlock(source, target, layers)` in layout selectors, where
`source` names the keys and `target` the queries (METHODS.md). `knockout_hooks` compiles it,
for one prepared input's layout, into plain TransformerLens hook pairs on
`blocks.{l}.attn.hook_attn_mask`: each sets the blocked entries of the shared additive mask to
finfo.min (never adds a boolean). The mask is [batch, 1, query, key]; no per-head copy is made,
so the fused attention kernel still runs. In generation, rows and columns past the prompt are
left open (new keys are never blocked; prompt rows keep their knockout).

    >>> spec = KnockoutSpec.of([("video", "question"), ("video", "last")], layers=range(4, 9))  # doctest: +SKIP
    >>> with model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, model.cfg.n_layers)):  # doctest: +SKIP
    ...     logits = model(prepared.tokens)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import torch
from jaxtyping import Bool

from tl_video.interventions.windows import checked_layers
from tl_video.model.masks import block_edges
from tl_video.prompts.layout import TokenLayout

HookPair = tuple[str, Callable[..., torch.Tensor]]


@dataclass(frozen=True, kw_only=True)
class EdgeBlock:
    """Queries in `target` may not attend to keys in `source`, in every layer of `layers`."""

    source: str
    target: str
    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(set(int(l) for l in self.layers))))

    def __repr__(self) -> str:
        return f"{self.source}↛{self.target} @ {_layer_ranges(self.layers)}"


@dataclass(frozen=True, kw_only=True)
class KnockoutSpec:
    """A set of blocked edges; the empty spec is the identity."""

    blocks: tuple[EdgeBlock, ...] = ()
    label: str = ""
    allow_empty_groups: bool = False  # True: a selector that selects no token is allowed

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))

    @classmethod
    def of(cls, edges: Iterable[tuple[str, str]], layers: Iterable[int], label: str = "") -> "KnockoutSpec":
        """Block every (source -> target) edge of `edges` in the same `layers`."""
        layers = tuple(layers)
        return cls(blocks=tuple(EdgeBlock(source=s, target=t, layers=layers) for s, t in edges), label=label)

    def combined(self, other: "KnockoutSpec", label: str = "") -> "KnockoutSpec":
        return KnockoutSpec(blocks=self.blocks + other.blocks, label=label or f"{self.label}+{other.label}")

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "allow_empty_groups": self.allow_empty_groups,
                "blocks": [asdict(block) | {"layers": list(block.layers)} for block in self.blocks]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "KnockoutSpec":
        unknown = set(data) - {"label", "allow_empty_groups", "blocks"}
        if unknown:
            raise ValueError(f"unknown knockout spec fields {sorted(unknown)}; valid: label, allow_empty_groups, blocks")
        blocks = []
        for index, block in enumerate(data.get("blocks", [])):
            extra = set(block) - {"source", "target", "layers"}
            if extra:
                raise ValueError(f"knockout block {index}: unknown fields {sorted(extra)}; valid: source, target, layers")
            blocks.append(EdgeBlock(**block))
        return cls(blocks=tuple(blocks), label=data.get("label", ""), allow_empty_groups=data.get("allow_empty_groups", False))

    def __repr__(self) -> str:
        inner = "; ".join(repr(block) for block in self.blocks) or "nothing blocked"
        return f"KnockoutSpec({self.label + ': ' if self.label else ''}{inner})"


def blocked_edges_by_layer(
    spec: KnockoutSpec, layout: TokenLayout, n_layers: int
) -> dict[int, Bool[torch.Tensor, "query_pos key_pos"]]:
    """Per blocked layer, the [query, key] boolean matrix of removed edges (shared between equal layers)."""
    per_layer: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for block in spec.blocks:
        checked_layers(block.layers, n_layers, repr(block))
        keys, queries = _resolve(block.source, layout, spec), _resolve(block.target, layout, spec)
        for layer in block.layers:
            per_layer.setdefault(layer, []).append((queries, keys))
    matrices: dict[tuple, torch.Tensor] = {}
    out = {}
    for layer, pairs in per_layer.items():
        signature = tuple((tuple(q.tolist()), tuple(k.tolist())) for q, k in pairs)
        if signature not in matrices:
            blocked = torch.zeros(layout.n_tokens, layout.n_tokens, dtype=torch.bool)
            for queries, keys in pairs:
                blocked[queries[:, None], keys[None, :]] = True
            matrices[signature] = blocked
        out[layer] = matrices[signature]
    return out


def knockout_hooks(spec: KnockoutSpec, layout: TokenLayout, n_layers: int) -> list[HookPair]:
    """TransformerLens (name, hook) pairs applying `spec` to inputs with this layout."""
    return [
        (f"blocks.{layer}.attn.hook_attn_mask", _mask_hook(blocked))
        for layer, blocked in sorted(blocked_edges_by_layer(spec, layout, n_layers).items())
    ]


def _mask_hook(blocked: Bool[torch.Tensor, "n n"]) -> Callable[..., torch.Tensor]:
    prompt_length = blocked.shape[0]

    def hook(mask: torch.Tensor, hook: Any) -> torch.Tensor:
        n_queries, n_keys = mask.shape[-2:]
        first_query = n_keys - n_queries
        rows = torch.zeros(n_queries, n_keys, dtype=torch.bool)
        row_end = min(n_keys, prompt_length)
        if first_query < row_end:
            rows[: row_end - first_query, :row_end] = blocked[first_query:row_end, :row_end]
        return block_edges(mask, rows.to(mask.device))

    return hook


def _resolve(selector: str, layout: TokenLayout, spec: KnockoutSpec) -> torch.Tensor:
    try:
        positions = layout.positions(selector)
    except (KeyError, IndexError) as error:
        raise ValueError(f"knockout group {selector!r}: {error.args[0]}") from None
    if positions.numel() == 0 and not spec.allow_empty_groups:
        raise ValueError(
            f"knockout group {selector!r} selects no token in this input; fix the selector or pass "
            "allow_empty_groups=True to accept an empty group"
        )
    return positions


def _layer_ranges(layers: tuple[int, ...]) -> str:
    """(0,1,2,5) -> "L1-L3,L6" (1-indexed, as in prose and figures)."""
    if not layers:
        return "no layer"
    ranges, start, previous = [], layers[0], layers[0]
    for layer in layers[1:] + (None,):
        if layer is not None and layer == previous + 1:
            previous = layer
            continue
        ranges.append(f"L{start + 1}" if start == previous else f"L{start + 1}-L{previous + 1}")
        if layer is not None:
            start = previous = layer
    return ",".join(ranges)
