"""Gradient knockout attribution: a first-order estimate of every knockout's effect, for screening.

Blocking the keys K of queries Q in layer l replaces each blocked query row of the attention
pattern by the clean row with the blocked entries removed and the rest renormalised (a softmax
over fewer keys); a row whose every causal key is blocked becomes all zeros (the library's rule,
docs/methods.md "Fully blocked queries"). So the pattern change a single-layer knockout causes,

    ΔA_l = A_l(knocked) − A_l(clean),

is a function of the clean pattern alone, and the first-order (attribution-patching) estimate of
the knockout's effect on a metric m is

    Δm ≈ Σ_heads Σ_rows Σ_keys (∂m/∂A_l) · ΔA_l,

with ∂m/∂A_l read at `blocks.{l}.attn.hook_pattern` in one backward pass (ΔA_l is taken from the
clean scores, a softmax over the unblocked keys, so rows whose kept entries underflow stay exact).
One forward and one backward pass give every (flow, layer) estimate at once. The metric m is the
log-odds of p(token) at the last position (full-vocabulary softmax; `link="log_prob"`: log p), and
the estimate is reported in the sweeps' unit, the relative change of p(token) in percent
(`change_true` for the true letter, `change_answer` for the baseline answer): p_new = σ(m + Δm).
To first order both links give the same number, 100·Δ log p; the log-odds one does not flatten
when p is near 1 (a confident model), where every gradient of log p vanishes.

A knockout over a window of layers is estimated by the sum of its layers' estimates: the exact
directional derivative of m along the window's joint pattern change, still first order. It ignores
how a knockout in one layer changes the patterns and inputs of later layers, and the curvature of
the metric: a large knockout (a row losing most of its mass, a flow that carries the answer) can be
misranked. Use it to choose which configurations to run exactly (`knockout_probabilities`), not in
place of them; `knockout_attribution(..., exact=True)` also runs the exact sweep of the same
configurations and `result.spearman()` measures the rank agreement.

    >>> screen = knockout_attribution(model, examples, FlowOptions(presets=("vql-to-ql",)))  # doctest: +SKIP
    >>> screen.mean()                 # [flow, layer] mean estimated change of p(true), percent   # doctest: +SKIP
    >>> screen.window(k=2)            # [example, flow, centre] over the study's windows          # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from tl_video.analyses.flow import USER_PRESET, FlowOptions, blocked_edge_count, default_window_k
from tl_video.analyses.scoring import ScoredExample, scored_examples
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.data.examples import VideoQAExample
from tl_video.interventions.knockout import KnockoutSpec, blocked_edges_by_layer
from tl_video.interventions.presets import preset
from tl_video.interventions.windows import checked_layers, window_layers
from tl_video.prompts.prepared import PreparedInput

METRIC_TOKENS: dict[str, Callable[[ScoredExample], int]] = {
    "true": lambda scored: scored.true_token,  # as the sweeps' change_true (what the figures plot)
    "answer": lambda scored: scored.answer_token,  # as change_answer (the baseline argmax)
}


# ------------------------------------------------------------------------------- one input


def log_probability(logits: Float[torch.Tensor, "d_vocab"], token: int) -> Float[torch.Tensor, ""]:
    """log p(token) under the full-vocabulary softmax."""
    return logits.log_softmax(-1)[token]


def log_odds(logits: Float[torch.Tensor, "d_vocab"], token: int) -> Float[torch.Tensor, ""]:
    """log p/(1 − p) of `token`, computed from the logits (stable when p is within float precision of 1)."""
    others = torch.cat([logits[:token], logits[token + 1:]])
    return logits[token] - others.logsumexp(-1)


LINKS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"log_odds": log_odds, "log_prob": log_probability}
INVERSE_LINKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {  # the linearised value -> p
    "log_odds": lambda value: 1.0 / (1.0 + np.exp(-value)), "log_prob": np.exp,
}


def pattern_change(
    scores: Float[torch.Tensor, "head query_pos key_pos"],
    pattern: Float[torch.Tensor, "head query_pos key_pos"],
    blocked: Bool[torch.Tensor, "query_pos key_pos"],
) -> Float[torch.Tensor, "head query_pos key_pos"]:
    """ΔA = knocked − clean for one layer: each row's softmax over its unblocked keys (the clean row with
    the blocked entries removed and renormalised), a row with every causal key blocked all zeros.

    Taken from the clean (masked) scores rather than by dividing the clean pattern by its kept mass,
    which loses the kept entries when they underflow (a row that put nearly all its mass on blocked keys).
    """
    knocked = _knocked_rows(scores, blocked)
    return knocked - pattern


def _knocked_rows(
    scores: Float[torch.Tensor, "head rows key_pos"], blocked: Bool[torch.Tensor, "rows key_pos"]
) -> Float[torch.Tensor, "head rows key_pos"]:
    """Softmax of the rows with the blocked keys at finfo.min, as the model's mask does; fully blocked rows 0."""
    lowest = torch.finfo(scores.dtype).min  # in the scores' own dtype, as attention.py compares
    masked = scores.masked_fill(blocked, lowest)
    fully = (masked <= lowest).all(-1, keepdim=True)
    return masked.softmax(-1, dtype=torch.float32).masked_fill(fully, 0.0)


def knockout_estimates(
    model: Any, prepared: PreparedInput, specs: Sequence[KnockoutSpec], token: int, link: str = "log_odds"
) -> tuple[Float[torch.Tensor, "spec layer"], float]:
    """Per spec and layer, the first-order change of the linearised metric (`link` of p(`token`) at the last
    position) from that layer's blocked edges, from one forward and one backward pass; and its clean value.

    Entry [s, l] is ⟨∂m/∂A_l, ΔA_l⟩ (summed over heads, rows, keys), ΔA_l from the clean scores and pattern
    (see `pattern_change`); a spec's estimate is the sum over its layers (`.sum(-1)`), and a layer it
    leaves open, or where it blocks no causal edge, contributes exactly 0.
    """
    n_layers = model.cfg.n_layers
    work: dict[int, list[tuple[int, torch.Tensor]]] = {}  # layer -> (spec index, blocked matrix)
    for index, spec in enumerate(specs):
        for layer, matrix in blocked_edges_by_layer(spec, prepared.layout, n_layers).items():
            work.setdefault(layer, []).append((index, matrix))
    out = torch.zeros(len(specs), n_layers, dtype=torch.float64)
    leaf: list[torch.Tensor] = []
    scores: dict[int, torch.Tensor] = {}
    rows = _BlockedRows()

    def make_leaf(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        leaf.append(resid.detach().requires_grad_(True))  # the graph starts here; no parameter gradient
        return leaf[-1]

    def keep_scores(layer: int) -> Callable[..., None]:
        def hook(value: torch.Tensor, hook: Any) -> None:
            scores[layer] = value.detach()[0]
        return hook

    def watch(layer: int) -> Callable[..., torch.Tensor]:
        def hook(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
            clean = pattern.detach()[0]

            def on_gradient(gradient: torch.Tensor) -> None:
                layer_scores = scores.pop(layer)
                clean_term = (gradient[0].float() * clean.float()).sum(-1, dtype=torch.float64).sum(0)  # per query row
                contracted: dict[int, float] = {}  # one contraction per distinct blocked matrix
                for index, matrix in work[layer]:
                    if id(matrix) not in contracted:
                        contracted[id(matrix)] = _contract(layer_scores, gradient[0], clean_term, *rows(matrix, layer_scores.device))
                    out[index, layer] = contracted[id(matrix)]

            pattern.register_hook(on_gradient)
            return pattern

        return hook

    hooks = [("blocks.0.hook_resid_pre", make_leaf)]
    for layer in sorted(work):
        hooks += [(f"blocks.{layer}.attn.hook_attn_scores", keep_scores(layer)),
                  (f"blocks.{layer}.attn.hook_pattern", watch(layer))]
    tokens = prepared.tokens.to(model.W_E.device)
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        residual = model(tokens, stop_at_layer=n_layers)
        logits = model.final_logits(residual[:, -1:])[0, -1]
        value = LINKS[link](logits.to(torch.promote_types(logits.dtype, torch.float32)), token)
        if work:
            torch.autograd.grad(value, leaf)
    return out, float(value.detach())


class _BlockedRows:
    """Per blocked matrix (shared between the layers that block the same edges): the query rows with a
    blocked causal edge, their blocked keys, and which of them are fully blocked; found once per device
    (a model split over devices reads each layer's scores on that layer's device)."""

    def __init__(self) -> None:
        self.found: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.keep: list[torch.Tensor] = []  # holds the matrices, so their ids stay unique

    def __call__(
        self, matrix: Bool[torch.Tensor, "query_pos key_pos"], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (id(matrix), device)
        if key not in self.found:
            causal = _causal(matrix.shape[0], device)
            blocked = matrix.to(device) & causal
            rows = torch.nonzero(blocked.any(-1)).flatten()
            fully = (blocked[rows] | ~causal[rows]).all(-1)  # these rows attend to nothing: knocked row = 0
            self.found[key] = (rows, rows[~fully], blocked[rows[~fully]])
            self.keep.append(matrix)
        return self.found[key]


def _contract(
    scores: Float[torch.Tensor, "head query_pos key_pos"],
    gradient: Float[torch.Tensor, "head query_pos key_pos"],
    clean_term: Float[torch.Tensor, "query_pos"],
    rows: Int[torch.Tensor, "rows"],
    open_rows: Int[torch.Tensor, "open_rows"],
    blocked: Bool[torch.Tensor, "open_rows key_pos"],
) -> float:
    """⟨gradient, ΔA⟩ = ⟨G, A_knocked⟩ − ⟨G, A⟩ over the rows with a blocked causal edge (the only rows
    where ΔA is nonzero); `clean_term` holds ⟨G, A⟩ per row (summed over heads), fully blocked rows have
    A_knocked = 0 and only the second term."""
    if rows.numel() == 0:
        return 0.0
    knocked = 0.0
    if open_rows.numel():
        rows_scores = scores[:, open_rows]  # no fully blocked row here: a plain softmax over the open keys
        knocked_rows = rows_scores.masked_fill(blocked, torch.finfo(rows_scores.dtype).min).softmax(-1, dtype=torch.float32)
        knocked = float((gradient[:, open_rows].float() * knocked_rows).sum(dtype=torch.float64))
    return knocked - float(clean_term[rows].sum())


def _causal(n: int, device: torch.device) -> Bool[torch.Tensor, "query_pos key_pos"]:
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


# ------------------------------------------------------------------------------- the screen


@dataclass(frozen=True)
class KnockoutAttribution:
    """First-order estimates of every single-layer knockout of a screen, per example, flow and layer.

    `deltas` are first-order changes of the linearised metric (log-odds or log-probability of the
    token); `estimates` maps them to the sweeps' unit, the relative change of p(token) in percent.
    NaN marks a (flow, example) the sweeps would skip (the flow has no edge in that input). With
    `exact=True` the run also holds the exact changes of the same knockouts (`exact`, percent)."""

    flows: tuple[tuple[str, str], ...]  # (preset, label) per flow, in the sweeps' order
    layers: tuple[int, ...]  # the layers estimated (0-indexed)
    n_layers: int
    metric: str  # "true" or "answer": whose probability
    link: str  # "log_odds" or "log_prob": the quantity linearised
    example_ids: tuple[str, ...]
    deltas: Float[np.ndarray, "example flow layer"]
    clean: Float[np.ndarray, "example"]  # the clean value of the linearised quantity
    exact: Float[np.ndarray, "example flow layer"] | None = None  # exact relative changes, percent (exact=True)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of the gradient passes (and exact sweeps)

    @property
    def labels(self) -> list[str]:
        return [label for _, label in self.flows]

    @property
    def estimates(self) -> Float[np.ndarray, "example flow layer"]:
        """Estimated relative change of p(token), percent: p_new from the clean value + delta."""
        return self._percent(self.deltas)

    def mean(self) -> Float[np.ndarray, "flow layer"]:
        """Mean estimate (percent) over the examples a flow applies to (NaN where it applies to none)."""
        return _nanmean(self.estimates)

    def window(self, k: int | None = None, style: str = "center") -> Float[np.ndarray, "example flow centre"]:
        """Estimates (percent) of windowed knockouts: per centre layer, the deltas summed over the window's
        layers, then mapped (k=None: the study's default, round(9/32 · n)). Every layer of each window must
        have been estimated. First order: the layers' interactions are ignored."""
        k = default_window_k(self.n_layers) if k is None else min(k, self.n_layers)
        out = np.full(self.deltas.shape, np.nan)
        for column, centre in enumerate(self.layers):
            layers = window_layers(centre, self.n_layers, k, style)
            missing = sorted(set(layers) - set(self.layers))
            if missing:
                raise ValueError(f"window at centre L{centre + 1} needs layers {missing} that were not estimated; "
                                 "run knockout_attribution with FlowOptions(layers=None) (every layer)")
            columns = [self.layers.index(layer) for layer in layers]
            # a window of no layer blocks nothing: skipped, as the sweeps do
            out[:, :, column] = self.deltas[:, :, columns].sum(-1) if columns else np.nan
        return self._percent(out)

    def ranking(self) -> list[tuple[str, int, float]]:
        """(flow label, layer, mean estimate) from the most negative mean estimate (largest estimated drop) up."""
        mean = self.mean()
        cells = [(self.flows[f][1], layer, float(mean[f, j])) for f in range(len(self.flows))
                 for j, layer in enumerate(self.layers) if np.isfinite(mean[f, j])]
        return sorted(cells, key=lambda cell: cell[2])

    def spearman(self) -> dict[str, float]:
        """Rank agreement with the exact changes (needs exact=True): Spearman ρ over every (flow, layer)
        of the means over examples ("mean") and the median over examples of each example's ρ ("per_example")."""
        if self.exact is None:
            raise ValueError("spearman needs the exact changes: run knockout_attribution(..., exact=True)")
        per_example = [_spearman(a, b) for a, b in zip(self.estimates, self.exact)]
        return {"mean": _spearman(self.mean(), _nanmean(self.exact)), "per_example": float(np.nanmedian(per_example))}

    def to_json(self) -> dict[str, Any]:
        def as_list(values: np.ndarray | None) -> list | None:
            return None if values is None else np.where(np.isfinite(values), values, None).tolist()

        return {"flows": [list(flow) for flow in self.flows], "layers": list(self.layers), "n_layers": self.n_layers,
                "metric": self.metric, "link": self.link, "example_ids": list(self.example_ids),
                "deltas": as_list(self.deltas), "clean": self.clean.tolist(), "exact": as_list(self.exact),
                "seconds": dict(self.seconds)}

    def _percent(self, deltas: Float[np.ndarray, "example ..."]) -> Float[np.ndarray, "example ..."]:
        clean = self.clean.reshape((-1,) + (1,) * (deltas.ndim - 1))
        p, p_new = INVERSE_LINKS[self.link](clean), INVERSE_LINKS[self.link](clean + deltas)
        return (p_new / p - 1.0) * 100.0


def knockout_attribution(
    model: Any,
    examples: Sequence[VideoQAExample | ScoredExample],
    options: FlowOptions = FlowOptions(presets=("vql-to-ql",)),
    *,
    metric: str = "true",
    link: str = "log_odds",
    exact: bool = False,
    progress: bool = True,
) -> KnockoutAttribution:
    """Screen every flow of `options` (presets and user specs) at every layer of `options.layers`
    (None = all) with one forward and one backward pass per example.

    `examples`: multiple-choice examples (scored and selected by `options.samples`, as the sweeps do)
    or already scored ones (used as given). `metric`: whose probability, the true letter's ("true", as
    the figures) or the baseline answer's. `link`: the quantity linearised, "log_odds" (default; does not
    saturate when p is near 1) or "log_prob". Window options are not used here: `result.window(k, style)`
    sums the single-layer deltas over any window. `exact=True` also runs the exact sweep of the same
    single-layer knockouts (`knockout_probabilities`), to check the screen (`result.spearman()`).
    """
    if not isinstance(options, FlowOptions):
        raise ValueError(f"knockout_attribution options must be FlowOptions, got {type(options).__name__}")
    if metric not in METRIC_TOKENS:
        raise ValueError(f"knockout_attribution metric={metric!r}; valid: {', '.join(METRIC_TOKENS)}")
    if link not in LINKS:
        raise ValueError(f"knockout_attribution link={link!r}; valid: {', '.join(LINKS)}")
    if not examples:
        raise ValueError("knockout_attribution: no examples to analyse")
    n_layers = model.cfg.n_layers
    layers = checked_layers(options.layers, n_layers, "FlowOptions.layers")
    rows, exact_rows, clean, ids, flows = [], [], [], [], None
    seconds = {"attribution": 0.0, "exact": 0.0} if exact else {"attribution": 0.0}
    for scored in tqdm(_scored(model, examples, options), desc="attribution", unit="example", disable=not progress):
        layout, token = scored.prepared.layout, METRIC_TOKENS[metric](scored)
        by_flow = flow_specs(scored.prepared, options, layers)
        flows = flows or [flow for flow, _ in by_flow]
        applies = np.array([blocked_edge_count(spec, layout, n_layers)[0] is not None for _, spec in by_flow])
        start = time.perf_counter()
        per_layer, value = knockout_estimates(
            model, scored.prepared, [spec for (_, spec), ok in zip(by_flow, applies) if ok], token, link)
        seconds["attribution"] += time.perf_counter() - start
        grid = np.full((len(by_flow), len(layers)), np.nan)
        grid[applies] = per_layer[:, layers].numpy()
        rows.append(grid)
        if exact:
            start = time.perf_counter()
            single = [spec for layer in layers
                      for (_, spec), ok in zip(flow_specs(scored.prepared, options, (layer,)), applies) if ok]
            p_new = knockout_probabilities(model, scored.prepared, single)[:, token].double().numpy()
            seconds["exact"] += time.perf_counter() - start
            base = float(scored.probabilities[token])
            grid = np.full((len(by_flow), len(layers)), np.nan)
            grid[applies] = ((p_new - base) / base * 100.0).reshape(len(layers), -1).T  # layer-major -> [flow, layer]
            exact_rows.append(grid)
        clean.append(value)
        ids.append(scored.example.example_id)
    if not rows:
        raise ValueError(f"knockout_attribution: no example was selected (samples={options.samples!r})")
    return KnockoutAttribution(
        flows=tuple(flows), layers=tuple(layers), n_layers=n_layers, metric=metric, link=link, example_ids=tuple(ids),
        deltas=np.stack(rows), clean=np.array(clean), exact=np.stack(exact_rows) if exact else None, seconds=seconds,
    )


def flow_specs(
    prepared: PreparedInput, options: FlowOptions, layers: Sequence[int]
) -> list[tuple[tuple[str, str], KnockoutSpec]]:
    """((preset, label), spec) for every flow of `options` (presets, then user flows), blocked in `layers`."""
    layers = tuple(layers)
    out = [((name, spec.label), spec) for name in options.presets for spec in preset(name, prepared.layout, layers)]
    return out + [((USER_PRESET, flow.label), flow.spec(layers)) for flow in options.specs]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


def _scored(model: Any, examples: Sequence[VideoQAExample | ScoredExample], options: FlowOptions) -> Iterator[ScoredExample]:
    for example in examples:
        if isinstance(example, ScoredExample):
            yield example
        elif isinstance(example, VideoQAExample):
            yield from scored_examples(model, [example], options, progress=False)
        else:
            raise ValueError(
                f"knockout_attribution examples must be VideoQAExample or ScoredExample, got {type(example).__name__}")


def _nanmean(values: Float[np.ndarray, "example ..."]) -> Float[np.ndarray, "..."]:
    finite = np.isfinite(values)
    counts = finite.sum(0)
    sums = np.where(finite, values, 0.0).sum(0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
