"""Activation patching by layout group, on top of TransformerLens's own `patching` driver.

Context: TransformerLens's `get_act_patch_*` functions already run unchanged on clean vs
corrupted *videos* (the token tensors carry video ids). What they lack is the VideoLLM's
vocabulary: here a patch names token groups with layout selectors (`frame[2]`, `question`,
`last`, ...) or single video tokens by (frame, row, col). Each sweep is one call of
`transformer_lens.patching.generic_activation_patch` with an index table of (layer, group),
so `reduce="none"` returns TransformerLens's `PatchingResult` (mean, stderr, bootstrap CI,
permutation p-value) and every metric convention is TransformerLens's.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from functools import partial
from typing import Any, Callable, Literal, Sequence

import pandas as pd
import torch
from transformer_lens import ActivationCache
from transformer_lens import patching as tl_patching
from transformer_lens.patching import PatchingResult

from tl_video.interventions.windows import checked_layers
from tl_video.prompts.layout import TokenLayout
from tl_video.prompts.prepared import PreparedInput

MetricFn = Callable[[torch.Tensor], torch.Tensor]
# Activations patched per position: [batch, pos, ...] with pos on axis 1.
POSITIONAL_ACTIVATIONS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v")


def patch_groups(
    model: Any,
    clean: PreparedInput,
    corrupted: PreparedInput,
    clean_cache: ActivationCache,
    metric: MetricFn,
    selectors: Sequence[str],
    *,
    activation: str = "resid_pre",
    layers: Sequence[int] | None = None,
    reduce: Literal["scalar", "none"] = "scalar",
    progress: bool = True,
    batched: bool = False,
) -> torch.Tensor | PatchingResult:
    """Patch each group's clean activation into the corrupted run: a [layer, group] table.

    `selectors` name token groups of the (shared) layout; `reduce="none"` returns a
    `PatchingResult` with a trailing example axis (metric must then return [batch]).
    `progress=False` silences TransformerLens's progress bar. `batched=True` (one example,
    `metric` returning [batch]) runs every group of a layer in one forward pass, one batch row per
    group: the same numbers as one pass per (layer, group), several times faster; the table is a tensor.
    """
    clean.check_same_as(corrupted)
    groups = [_positions(clean.layout, selector) for selector in selectors]
    if batched:
        return _sweep_batched(model, corrupted.tokens, clean_cache, metric, groups, activation, layers, progress)
    return _sweep(model, corrupted.tokens, clean_cache, metric, groups, activation, layers, reduce, progress)


def patch_frames(model, clean, corrupted, clean_cache, metric, **kwargs) -> torch.Tensor | PatchingResult:
    """[layer, frame]: patch one frame's (or tubelet's) video tokens at a time."""
    selectors = [f"frame[{frame}]" for frame in range(clean.layout.n_frames)]
    return patch_groups(model, clean, corrupted, clean_cache, metric, selectors, **kwargs)


def patch_video_tokens(
    model, clean, corrupted, clean_cache, metric, *, activation: str = "resid_pre", layers=None, progress: bool = True
) -> torch.Tensor:
    """[layer, frame, row, col]: patch one video token at a time (NaN where the grid has no token)."""
    clean.check_same_as(corrupted)
    layout = clean.layout
    groups = [torch.tensor([position]) for position in layout.video_positions]
    flat = _sweep(model, corrupted.tokens, clean_cache, metric, groups, activation, layers, "scalar", progress)
    return layout.on_video_grid(flat)


def stack_examples(results: Sequence[PatchingResult]) -> PatchingResult:
    """Join per-example results (one example each, e.g. different layouts) along the example axis."""
    if not results:
        raise ValueError("no results to stack")
    first = results[0]
    if any(r.reduced for r in results):
        raise ValueError("stack per-example results: run each sweep with reduce='none'")
    shapes = {tuple(r.values.shape[:-1]) for r in results}
    if len(shapes) != 1:
        raise ValueError(f"results sweep different cells {sorted(shapes)}; patch the same selectors and layers")
    values = torch.cat([r.values for r in results], dim=-1)
    baseline = None if first.baseline is None else torch.cat([r.baseline for r in results], dim=-1)
    return replace(first, values=values, baseline=baseline)


def _positions(layout: TokenLayout, selector: str) -> torch.Tensor:
    positions = layout.positions(selector, role="patch group")  # a bad selector raises SelectorError
    if positions.numel() == 0:
        raise ValueError(f"patch group {selector!r} selects no token of this input")
    return positions


def _sweep(model, corrupted_tokens, clean_cache, metric, groups, activation, layers, reduce, progress=True):
    if activation not in POSITIONAL_ACTIVATIONS:
        raise ValueError(f"activation {activation!r} cannot be patched by position; valid: {', '.join(POSITIONAL_ACTIVATIONS)}")
    layers = checked_layers(layers, model.cfg.n_layers, "patching")
    index_df = pd.DataFrame([(layer, group) for layer in layers for group in range(len(groups))], columns=["layer", "group"])

    def set_group(corrupted_activation, index, clean_activation):
        # a model split over devices caches clean activations on its last device: each side indexes on its own
        positions = groups[index[1]]
        clean = clean_activation[:, positions.to(clean_activation.device)]
        corrupted_activation[:, positions.to(corrupted_activation.device)] = clean.to(corrupted_activation.device)
        return corrupted_activation

    with contextlib.nullcontext() if progress else _silent_transformer_lens_progress():
        result = tl_patching.generic_activation_patch(
            model, corrupted_tokens, clean_cache, metric, set_group, activation,
            index_df=index_df, reduce=reduce, baseline=reduce == "none",
        )
    if isinstance(result, PatchingResult):
        values = result.values.reshape(len(layers), len(groups), -1)
        return replace(result, values=values, axis_names=["layer", "group"])
    return result.reshape(len(layers), len(groups))


def _sweep_batched(model, corrupted_tokens, clean_cache, metric, groups, activation, layers, progress=True):
    """[layer, group] with one TransformerLens patch per layer: batch row g gets group g's clean activation."""
    if activation not in POSITIONAL_ACTIVATIONS:
        raise ValueError(f"activation {activation!r} cannot be patched by position; valid: {', '.join(POSITIONAL_ACTIVATIONS)}")
    if corrupted_tokens.shape[0] != 1:
        raise ValueError(f"batched patching takes one example (a batch of 1), got a batch of {corrupted_tokens.shape[0]}")
    layers = checked_layers(layers, model.cfg.n_layers, "patching")
    index_df = pd.DataFrame({"layer": layers})

    def set_groups(corrupted_activation, index, clean_activation):
        for row, positions in enumerate(groups):
            clean = clean_activation[0, positions.to(clean_activation.device)]  # on the split model's last device
            corrupted_activation[row, positions.to(corrupted_activation.device)] = clean.to(corrupted_activation.device)
        return corrupted_activation

    with contextlib.nullcontext() if progress else _silent_transformer_lens_progress():
        result = tl_patching.generic_activation_patch(
            model, corrupted_tokens.repeat(len(groups), 1), clean_cache, metric, set_groups, activation,
            index_df=index_df, reduce="none",
        )
    return result.values.reshape(len(layers), len(groups))


@contextlib.contextmanager
def _silent_transformer_lens_progress():
    """TransformerLens's patching loop draws its own tqdm bar and takes no switch: disable it here."""
    original = tl_patching.tqdm
    tl_patching.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        tl_patching.tqdm = original
