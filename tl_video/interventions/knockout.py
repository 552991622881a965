"""Attention knockout: remove chosen query->key edges before the softmax, in chosen layers.

A spec is data (JSON round trip, readable repr): a tuple of blocks, each naming the layers it
applies to. Group names are layout selectors; `source` names the keys and `target` the queries
(docs/methods.md, "Attention knockout").

- `EdgeBlock(source, target, layers)`: queries in `target` may not attend to keys in `source`.
- `KeepOnly(flows, layers)`: every (query, key) pair is blocked except the listed
  source -> target flows ("keep only these flows, block everything else").
- `EdgePairs(pairs)`: explicit (query, key) sequence positions per layer.
- `RandomEdges(counts, seed, region)`: per layer, `count` pairs of the causal triangle among the
  positions from `region`'s first token onward (diagonal included), drawn with a seeded generator.

A layer's blocked set is the union over the blocks that name it. `knockout_hooks` compiles a
spec, for one prepared input's layout, into TransformerLens hook pairs on
`blocks.{l}.attn.hook_attn_mask` that set the blocked entries of the shared additive mask to
finfo.min (never add a boolean); no per-head copy is made, so the fused kernel still runs.

Semantics worth knowing:
- A query whose every key is blocked in a layer attends to nothing: its attention output there
  is zero (b_O, if the model has one, still adds). A plain softmax would instead spread it over
  the whole row, future positions included.
- The hooks check the sequence they meet: a forward whose length differs from the layout's
  raises (compile hooks for each input's own layout). Longer sequences are accepted only as
  generation: queries past the prompt with the KV cache, or, inside `model.generate(...,
  use_past_kv_cache=False)`, the full recompute of prompt + generated tokens (`generate` tells
  the hooks the prompt length; a plain longer forward outside it still raises). Either way each
  generated query inherits the blocked keys of the last prompt row (new tokens are "last"
  tokens too: under Video↛Last they may not read the video either), and generated keys stay open.
- `edge_counts` counts kept and suppressed edges over the causal triangle, per layer and summed.

    >>> spec = KnockoutSpec.of([("video", "question"), ("video", "last")], layers=range(4, 9))  # doctest: +SKIP
    >>> with model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, model.cfg.n_layers)):  # doctest: +SKIP
    ...     logits = model(prepared.tokens)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np
import torch
from jaxtyping import Bool, Int

from tl_video.interventions.windows import checked_layers, integer, layer_numbers
from tl_video.model.generation import generation_prompt_length
from tl_video.model.masks import block_edges
from tl_video.prompts.layout import TokenLayout, check_selector

HookPair = tuple[str, Callable[..., torch.Tensor]]
Flow = tuple[str, str]  # (source = keys, target = queries)


def _selector(value: Any, what: str) -> str:
    return check_selector(value, what)  # SelectorError, the one type every selector check raises


@dataclass(frozen=True, kw_only=True)
class EdgeBlock:
    """Queries in `target` may not attend to keys in `source`, in every layer of `layers`."""

    source: str
    target: str
    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        _selector(self.source, "EdgeBlock source")
        _selector(self.target, "EdgeBlock target")
        object.__setattr__(self, "layers", tuple(sorted(set(layer_numbers(self.layers, f"EdgeBlock {self.source}↛{self.target}")))))

    def __repr__(self) -> str:
        return f"{self.source}↛{self.target} @ {_layer_ranges(self.layers)}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "edges", "source": self.source, "target": self.target, "layers": list(self.layers)}

    def blocked(self, layout: TokenLayout, allow_empty: bool) -> dict[int, Bool[torch.Tensor, "query_pos key_pos"]]:
        matrix = torch.zeros(layout.n_tokens, layout.n_tokens, dtype=torch.bool)
        queries, keys = _resolve(self.target, layout, allow_empty), _resolve(self.source, layout, allow_empty)
        matrix[queries[:, None], keys[None, :]] = True
        return dict.fromkeys(self.layers, matrix)


@dataclass(frozen=True, kw_only=True)
class KeepOnly:
    """In every layer of `layers`, block every (query, key) pair except the `flows` (source, target)."""

    flows: tuple[Flow, ...]
    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.flows, (str, bytes)) or not isinstance(self.flows, Iterable):
            raise ValueError(f"KeepOnly flows must be a list of (source, target) pairs, got {self.flows!r}")
        flows = []
        for index, flow in enumerate(self.flows):
            if isinstance(flow, (str, bytes)) or not isinstance(flow, Iterable) or len(tuple(flow)) != 2:
                raise ValueError(f"KeepOnly flow {index} must be a (source, target) pair of selectors, got {flow!r}")
            source, target = tuple(flow)
            flows.append((_selector(source, f"KeepOnly flow {index} source"), _selector(target, f"KeepOnly flow {index} target")))
        object.__setattr__(self, "flows", tuple(flows))
        object.__setattr__(self, "layers", tuple(sorted(set(layer_numbers(self.layers, "KeepOnly")))))

    def __repr__(self) -> str:
        kept = ", ".join(f"{s}→{t}" for s, t in self.flows) or "nothing"
        return f"keep only {kept} @ {_layer_ranges(self.layers)}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "keep_only", "flows": [list(flow) for flow in self.flows], "layers": list(self.layers)}

    def blocked(self, layout: TokenLayout, allow_empty: bool) -> dict[int, Bool[torch.Tensor, "query_pos key_pos"]]:
        kept = torch.zeros(layout.n_tokens, layout.n_tokens, dtype=torch.bool)
        for source, target in self.flows:
            queries, keys = _resolve(target, layout, allow_empty), _resolve(source, layout, allow_empty)
            kept[queries[:, None], keys[None, :]] = True
        return dict.fromkeys(self.layers, ~kept)


@dataclass(frozen=True, kw_only=True)
class EdgePairs:
    """Explicit blocked (query, key) sequence positions per layer: `{layer: ((query, key), ...)}`."""

    pairs: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]

    def __post_init__(self) -> None:
        items = self.pairs.items() if isinstance(self.pairs, Mapping) else self.pairs
        by_layer: dict[int, set[tuple[int, int]]] = {}
        for entry in items:
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise ValueError(f"EdgePairs entries must be (layer, [(query, key), ...]), got {entry!r}")
            layer, pairs = entry
            layer = integer(layer, "EdgePairs layer number")
            target = by_layer.setdefault(layer, set())
            for pair in pairs:
                if isinstance(pair, (str, bytes)) or not isinstance(pair, Iterable) or len(tuple(pair)) != 2:
                    raise ValueError(f"EdgePairs layer {layer}: each pair must be (query, key) positions, got {pair!r}")
                query, key = (integer(p, f"EdgePairs layer {layer} position") for p in pair)
                if query < 0 or key < 0:
                    raise ValueError(f"EdgePairs layer {layer}: positions must be >= 0, got ({query}, {key})")
                target.add((query, key))
        object.__setattr__(self, "pairs", tuple((layer, tuple(sorted(by_layer[layer]))) for layer in sorted(by_layer)))

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(layer for layer, _ in self.pairs)

    def __repr__(self) -> str:
        counts = ", ".join(f"L{layer + 1}: {len(pairs)}" for layer, pairs in self.pairs) or "none"
        return f"pairs ({counts})"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "pairs", "pairs": {str(layer): [list(p) for p in pairs] for layer, pairs in self.pairs}}

    def blocked(self, layout: TokenLayout, allow_empty: bool) -> dict[int, Bool[torch.Tensor, "query_pos key_pos"]]:
        out = {}
        for layer, pairs in self.pairs:
            matrix = torch.zeros(layout.n_tokens, layout.n_tokens, dtype=torch.bool)
            if pairs:
                index = torch.tensor(pairs, dtype=torch.long)
                if int(index.max()) >= layout.n_tokens:
                    raise ValueError(
                        f"EdgePairs layer {layer}: position {int(index.max())} is past this input's {layout.n_tokens} tokens"
                    )
                matrix[index[:, 0], index[:, 1]] = True
            out[layer] = matrix
        return out


@dataclass(frozen=True, kw_only=True)
class RandomEdges:
    """Per layer, `count` causal (query, key) pairs (key <= query, diagonal included) drawn uniformly
    without replacement among the positions from `region`'s first token onward; seeded, so the
    same layout, counts and seed always give the same pairs."""

    counts: tuple[tuple[int, int], ...]  # (layer, count)
    seed: int
    region: str = "video"

    def __post_init__(self) -> None:
        items = self.counts.items() if isinstance(self.counts, Mapping) else self.counts
        counts: dict[int, int] = {}
        for entry in items:
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise ValueError(f"RandomEdges counts must be (layer, count) pairs, got {entry!r}")
            layer, count = integer(entry[0], "RandomEdges layer number"), integer(entry[1], "RandomEdges count")
            if count < 0:
                raise ValueError(f"RandomEdges layer {layer}: count must be >= 0, got {count}")
            counts[layer] = counts.get(layer, 0) + count
        object.__setattr__(self, "counts", tuple(sorted(counts.items())))
        object.__setattr__(self, "seed", integer(self.seed, "RandomEdges seed"))
        _selector(self.region, "RandomEdges region")

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(layer for layer, _ in self.counts)

    def __repr__(self) -> str:
        counts = ", ".join(f"L{layer + 1}: {count}" for layer, count in self.counts) or "none"
        return f"random pairs from {self.region} on, seed {self.seed} ({counts})"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "random", "counts": {str(layer): count for layer, count in self.counts}, "seed": self.seed,
                "region": self.region}

    def n_candidates(self, layout: TokenLayout) -> int:
        """How many causal pairs lie from `region`'s first token onward in this input."""
        return _triangle_size(len(_region_onward(self.region, layout)))

    def blocked(self, layout: TokenLayout, allow_empty: bool) -> dict[int, Bool[torch.Tensor, "query_pos key_pos"]]:
        region = _region_onward(self.region, layout)
        n_candidates = _triangle_size(len(region))
        out = {}
        for layer, count in self.counts:
            if count > n_candidates:
                raise ValueError(
                    f"RandomEdges layer {layer}: cannot block {count} pairs, only {n_candidates} causal pairs lie "
                    f"from {self.region!r} onward in this input"
                )
            rng = np.random.default_rng([self.seed, layer])
            rows, cols = _triangle_pairs(rng.choice(n_candidates, size=count, replace=False))
            matrix = torch.zeros(layout.n_tokens, layout.n_tokens, dtype=torch.bool)
            matrix[region[rows], region[cols]] = True
            out[layer] = matrix
        return out


Block = Union[EdgeBlock, KeepOnly, EdgePairs, RandomEdges]
_KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "edges": (EdgeBlock, ("source", "target", "layers")),
    "keep_only": (KeepOnly, ("flows", "layers")),
    "pairs": (EdgePairs, ("pairs",)),
    "random": (RandomEdges, ("counts", "seed", "region")),
}


@dataclass(frozen=True, kw_only=True)
class KnockoutSpec:
    """A set of blocked edges; the empty spec is the identity."""

    blocks: tuple[Block, ...] = ()
    label: str = ""
    allow_empty_groups: bool = False  # True: a selector that selects no token is allowed

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        for index, block in enumerate(self.blocks):
            if not isinstance(block, (EdgeBlock, KeepOnly, EdgePairs, RandomEdges)):
                raise ValueError(
                    f"knockout block {index} is a {type(block).__name__}; use EdgeBlock, KeepOnly, EdgePairs or RandomEdges"
                )
        if not isinstance(self.label, str):
            raise ValueError(f"knockout spec label must be a string, got {self.label!r}")
        if not isinstance(self.allow_empty_groups, bool):
            raise ValueError(f"allow_empty_groups must be true or false, got {self.allow_empty_groups!r}")

    @classmethod
    def of(cls, edges: Iterable[Flow], layers: Iterable[int], label: str = "") -> "KnockoutSpec":
        """Block every (source -> target) edge of `edges` in the same `layers`."""
        layers = layer_numbers(layers, "KnockoutSpec.of")
        return cls(blocks=tuple(EdgeBlock(source=s, target=t, layers=layers) for s, t in _flows(edges)), label=label)

    @classmethod
    def keep_only(cls, flows: Iterable[Flow], layers: Iterable[int], label: str = "") -> "KnockoutSpec":
        """In `layers`, keep only the (source -> target) `flows` and block every other edge."""
        return cls(blocks=(KeepOnly(flows=tuple(flows), layers=layer_numbers(layers, "KnockoutSpec.keep_only")),), label=label)

    def combined(self, other: "KnockoutSpec", label: str = "") -> "KnockoutSpec":
        return KnockoutSpec(blocks=self.blocks + other.blocks, label=label or f"{self.label}+{other.label}",
                            allow_empty_groups=self.allow_empty_groups or other.allow_empty_groups)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "allow_empty_groups": self.allow_empty_groups,
                "blocks": [block.to_json() for block in self.blocks]}

    @classmethod
    def from_json(cls, data: Any) -> "KnockoutSpec":
        """Read `to_json`'s output; any other shape raises one ValueError naming the field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a knockout spec must be a JSON object with 'blocks', got {type(data).__name__}: {data!r:.80}")
        unknown = set(data) - {"label", "allow_empty_groups", "blocks"}
        if unknown:
            raise ValueError(f"unknown knockout spec fields {sorted(unknown)}; valid: label, allow_empty_groups, blocks")
        raw_blocks = data.get("blocks", [])
        if not isinstance(raw_blocks, list):
            raise ValueError(f"knockout spec 'blocks' must be a list of objects, got {raw_blocks!r:.80}")
        blocks = [_block_from_json(index, block) for index, block in enumerate(raw_blocks)]
        return cls(blocks=tuple(blocks), label=data.get("label", ""), allow_empty_groups=data.get("allow_empty_groups", False))

    def __repr__(self) -> str:
        inner = "; ".join(repr(block) for block in self.blocks) or "nothing blocked"
        return f"KnockoutSpec({self.label + ': ' if self.label else ''}{inner})"


def _flows(edges: Any) -> list[Flow]:
    """(source, target) pairs, refusing a bare string or a pair that is not two items."""
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
        raise ValueError(f"edges must be a list of (source, target) pairs such as [('video', 'last')], got {edges!r}")
    flows = []
    for edge in edges:
        if isinstance(edge, (str, bytes)) or not isinstance(edge, Iterable) or len(tuple(edge)) != 2:
            raise ValueError(f"each edge must be a (source, target) pair such as ('video', 'last'), got {edge!r}")
        flows.append(tuple(edge))
    return flows


def _block_from_json(index: int, block: Any) -> Block:
    if not isinstance(block, Mapping):
        raise ValueError(f"knockout block {index} must be an object such as "
                         f'{{"source": "video", "target": "last", "layers": [0]}}, got {block!r:.80}')
    kind = block.get("kind", "edges")
    if kind not in _KINDS:
        raise ValueError(f"knockout block {index}: unknown kind {kind!r}; valid: {', '.join(_KINDS)}")
    block_class, fields = _KINDS[kind]
    data = {name: value for name, value in block.items() if name != "kind"}
    extra = set(data) - set(fields)
    if extra:
        raise ValueError(f"knockout block {index}: unknown fields {sorted(extra)}; valid: {', '.join(fields)}")
    if "layers" in data and not isinstance(data["layers"], list):
        raise ValueError(f"knockout block {index}: 'layers' must be a list of integers, got {data['layers']!r}")
    if kind in ("pairs", "random"):
        key = "pairs" if kind == "pairs" else "counts"
        if not isinstance(data.get(key), Mapping):
            raise ValueError(f"knockout block {index}: {key!r} must be an object keyed by layer number")
        data[key] = tuple((_json_layer(index, layer), value) for layer, value in data[key].items())
    try:
        return block_class(**data)
    except TypeError as error:  # a missing field
        raise ValueError(f"knockout block {index}: {error}; fields: {', '.join(fields)}") from None
    except ValueError as error:  # keep the type (a bad selector stays a SelectorError)
        raise type(error)(f"knockout block {index}: {error}") from None


def _json_layer(index: int, layer: str) -> int:
    if not (isinstance(layer, str) and layer.isdigit()):
        raise ValueError(f"knockout block {index}: layer key {layer!r} must be a non-negative integer")
    return int(layer)


def _check_arguments(spec: Any, layout: Any, n_layers: Any) -> int:
    """The common misuses of (spec, layout, n_layers), each as one clear line."""
    if not isinstance(spec, KnockoutSpec):
        hint = " (read JSON with KnockoutSpec.from_json)" if isinstance(spec, Mapping) else ""
        raise ValueError(f"expected a KnockoutSpec, got {type(spec).__name__}{hint}; build one with KnockoutSpec.of(...)")
    if not isinstance(layout, TokenLayout):
        hint = "; pass prepared.layout" if hasattr(layout, "layout") else ""
        raise ValueError(f"expected the input's TokenLayout, got {type(layout).__name__}{hint}")
    n_layers = integer(n_layers, "n_layers")
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1 (model.cfg.n_layers), got {n_layers}")
    return n_layers


def blocked_edges_by_layer(
    spec: KnockoutSpec, layout: TokenLayout, n_layers: int
) -> dict[int, Bool[torch.Tensor, "query_pos key_pos"]]:
    """Per blocked layer, the [query, key] boolean matrix of removed edges (shared between equal layers)."""
    n_layers = _check_arguments(spec, layout, n_layers)
    contributions: dict[int, list[torch.Tensor]] = {}
    for block in spec.blocks:
        checked_layers(block.layers, n_layers, repr(block))
        for layer, matrix in block.blocked(layout, spec.allow_empty_groups).items():
            contributions.setdefault(layer, []).append(matrix)
    unions: dict[tuple[int, ...], torch.Tensor] = {}
    out = {}
    for layer in sorted(contributions):
        matrices = contributions[layer]
        signature = tuple(sorted({id(m) for m in matrices}))
        if signature not in unions:
            union = matrices[0].clone()
            for matrix in matrices[1:]:
                union |= matrix
            unions[signature] = union
        out[layer] = unions[signature]
    return out


@dataclass(frozen=True)
class EdgeCounts:
    """Attention edges of one input under a spec, over the causal triangle (N(N+1)/2 per layer)."""

    n_tokens: int
    suppressed_per_layer: tuple[int, ...]  # blocked causal pairs in each layer 0..n_layers-1

    @property
    def n_layers(self) -> int:
        return len(self.suppressed_per_layer)

    @property
    def baseline_per_layer(self) -> int:
        return _triangle_size(self.n_tokens)

    @property
    def kept_per_layer(self) -> tuple[int, ...]:
        return tuple(self.baseline_per_layer - s for s in self.suppressed_per_layer)

    @property
    def baseline(self) -> int:
        return self.baseline_per_layer * self.n_layers

    @property
    def suppressed(self) -> int:
        return sum(self.suppressed_per_layer)

    @property
    def kept(self) -> int:
        return self.baseline - self.suppressed

    @property
    def suppressed_fraction(self) -> float:
        return self.suppressed / self.baseline if self.baseline else 0.0

    @property
    def kept_fraction(self) -> float:
        return 1.0 - self.suppressed_fraction

    def to_json(self) -> dict[str, Any]:
        return {"n_tokens": self.n_tokens, "n_layers": self.n_layers, "baseline": self.baseline, "kept": self.kept,
                "suppressed": self.suppressed, "kept_fraction": self.kept_fraction,
                "suppressed_fraction": self.suppressed_fraction, "suppressed_per_layer": list(self.suppressed_per_layer)}

    def __repr__(self) -> str:
        return (f"EdgeCounts({self.n_tokens} tokens x {self.n_layers} layers: kept {self.kept:,} of {self.baseline:,} "
                f"({self.kept_fraction:.1%}), suppressed {self.suppressed:,} ({self.suppressed_fraction:.1%}))")


def edge_counts(spec: KnockoutSpec, layout: TokenLayout, n_layers: int) -> EdgeCounts:
    """Kept and suppressed attention edges: blocked pairs above the diagonal (already causal) don't count."""
    n_layers = _check_arguments(spec, layout, n_layers)
    causal = torch.ones(layout.n_tokens, layout.n_tokens, dtype=torch.bool).tril()
    blocked = blocked_edges_by_layer(spec, layout, n_layers)
    counted: dict[int, int] = {}
    suppressed = []
    for layer in range(n_layers):
        matrix = blocked.get(layer)
        if matrix is None:
            suppressed.append(0)
            continue
        if id(matrix) not in counted:
            counted[id(matrix)] = int((matrix & causal).sum())
        suppressed.append(counted[id(matrix)])
    return EdgeCounts(n_tokens=layout.n_tokens, suppressed_per_layer=tuple(suppressed))


def knockout_hooks(spec: KnockoutSpec, layout: TokenLayout, n_layers: int) -> list[HookPair]:
    """TransformerLens (name, hook) pairs applying `spec` to inputs with this layout."""
    return [
        (f"blocks.{layer}.attn.hook_attn_mask", _mask_hook(blocked))
        for layer, blocked in sorted(blocked_edges_by_layer(spec, layout, n_layers).items())
    ]


def _mask_hook(blocked: Bool[torch.Tensor, "n n"]) -> Callable[..., torch.Tensor]:
    """Block the compiled edges; queries past the prompt take the last prompt row, new keys stay open."""
    prompt_length = blocked.shape[0]
    on_device: dict[torch.device, torch.Tensor] = {}

    def hook(mask: torch.Tensor, hook: Any) -> torch.Tensor:
        n_queries, n_keys = mask.shape[-2:]
        first_query = n_keys - n_queries
        _check_sequence(prompt_length, first_query, n_keys, getattr(hook, "name", None))
        if mask.device not in on_device:
            on_device[mask.device] = blocked.to(mask.device)
        prompt_rows = on_device[mask.device]
        if first_query == 0 and n_queries == prompt_length:  # the whole prompt: its rows as compiled
            return block_edges(mask, prompt_rows)
        query_rows = torch.arange(first_query, n_keys, device=mask.device).clamp(max=prompt_length - 1)
        rows = prompt_rows[query_rows]  # [query, prompt key]
        if n_keys > prompt_length:
            rows = torch.cat([rows, rows.new_zeros(n_queries, n_keys - prompt_length)], dim=1)
        return block_edges(mask, rows)

    return hook


def _check_sequence(prompt_length: int, first_query: int, n_keys: int, hook_name: str | None) -> None:
    """Refuse a sequence that is not this layout's input (or its continuation in generation)."""
    if n_keys == prompt_length:
        return
    if n_keys > prompt_length and (first_query >= prompt_length or generation_prompt_length() == prompt_length):
        return  # queries past the prompt (KV cache), or the no-cache recompute of prompt + generated tokens
    where = f" at {hook_name}" if hook_name else ""
    raise ValueError(
        f"knockout hooks were compiled for a layout of {prompt_length} tokens but met a sequence of {n_keys} "
        f"tokens{where}; compile them with knockout_hooks(spec, layout, n_layers) using that input's own layout"
    )


def _resolve(selector: str, layout: TokenLayout, allow_empty: bool) -> Int[torch.Tensor, "n"]:
    positions = layout.positions(selector, role="knockout group")  # a bad selector raises SelectorError
    if positions.numel() == 0 and not allow_empty:
        raise ValueError(
            f"knockout group {selector!r} selects no token in this input; fix the selector or pass "
            "allow_empty_groups=True to accept an empty group"
        )
    return positions


def _region_onward(selector: str, layout: TokenLayout) -> Int[torch.Tensor, "m"]:
    """Every position from the first token of `selector` to the end of the input."""
    start = _resolve(selector, layout, allow_empty=False).min()
    everything = layout.positions("all")
    return everything[everything >= start]


def _triangle_size(n: int) -> int:
    return n * (n + 1) // 2


def _triangle_pairs(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear index t over the lower triangle (row-major, diagonal included) -> (row, col)."""
    t = index.astype(np.int64)
    rows = ((np.sqrt(8.0 * t + 1.0) - 1.0) // 2).astype(np.int64)
    rows += (rows + 1) * (rows + 2) // 2 <= t  # float rounding at exact triangle numbers
    rows -= rows * (rows + 1) // 2 > t
    cols = t - rows * (rows + 1) // 2
    return torch.from_numpy(rows), torch.from_numpy(cols)


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
