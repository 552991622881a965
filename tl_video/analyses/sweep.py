"""Knockout evaluation at the answer position: the one interface the study's sweeps call.

`knockout_probabilities` returns, for one prepared input and a list of knockout specs, the
softmax at the last position under each spec. This is the seam for the exact sweep engine: a
faster implementation (reusing the clean pass, recomputing only what a knockout changes, batching
specs) replaces the body and must return the same numbers (probabilities within 1e-5 in fp32).

`engine="exact"` runs the clean pass once and recomputes, per spec, only the layers from its first
blocked layer and the positions from its earliest blocked query (`tl_video.analyses.sweep_engine`);
`engine="plain"` runs one full forward per spec. `"auto"` picks the default (`DEFAULT_ENGINE`) and
falls back to plain while other hooks are registered on the model (they may read whole-sequence
activations that the exact engine never computes).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Float

from tl_video.analyses.sweep_engine import engine_probabilities, has_active_hooks
from tl_video.interventions.knockout import KnockoutSpec, knockout_hooks
from tl_video.prompts.prepared import PreparedInput

ENGINES = ("auto", "exact", "plain")
DEFAULT_ENGINE = "plain"  # what "auto" runs when no other hook is registered


@torch.no_grad()
def knockout_probabilities(
    model: Any, prepared: PreparedInput, specs: Sequence[KnockoutSpec], engine: str = "auto"
) -> Float[torch.Tensor, "spec d_vocab"]:
    """Softmax over the vocabulary at the last position under each spec (float32, on the CPU)."""
    if engine not in ENGINES:
        raise ValueError(f"knockout_probabilities engine={engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "plain" if has_active_hooks(model) else DEFAULT_ENGINE
    if engine == "exact":
        return engine_probabilities(model, prepared, specs)
    return plain_probabilities(model, prepared, specs)


def plain_probabilities(
    model: Any, prepared: PreparedInput, specs: Sequence[KnockoutSpec]
) -> Float[torch.Tensor, "spec d_vocab"]:
    """One full forward per spec under its knockout hooks (the reference the exact engine must equal)."""
    n_layers = model.cfg.n_layers
    rows = []
    for spec in specs:
        with model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, n_layers)):
            rows.append(model(prepared.tokens)[0, -1].float().softmax(-1).cpu())
    if not rows:
        return torch.zeros(0, model.cfg.d_vocab)
    return torch.stack(rows)
