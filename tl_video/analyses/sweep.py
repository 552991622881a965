"""Knockout evaluation at the answer position: the one interface the study's sweeps call.

`knockout_probabilities` returns, for one prepared input and a list of knockout specs, the
softmax at the last position under each spec. This is the seam for the exact sweep engine: a
faster implementation (reusing the clean pass, recomputing only what a knockout changes, batching
specs) replaces the body and must return the same numbers (probabilities within 1e-5 in fp32).

`engine="exact"` runs the clean pass once and recomputes, per spec, only the layers from its first
blocked layer and the positions from its earliest blocked query (`tl_video.analyses.sweep_engine`);
`engine="batched"` also runs specs that share their earliest blocked query as one batch: faster, but
a spec's numbers then depend (at float-rounding level, ~1e-8) on which specs share its call, so a
resumed study would not reproduce an uninterrupted one bit for bit; `"exact"` computes each spec on
its own and gives the same bits whatever the call holds.
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

ENGINES = ("auto", "exact", "batched", "plain")
BATCH = 16  # specs per forward for engine="batched"
DEFAULT_ENGINE = "exact"  # what "auto" runs when no other hook is registered (equal to plain: tests/test_sweep_engine.py)


@torch.no_grad()
def knockout_probabilities(
    model: Any, prepared: PreparedInput, specs: Sequence[KnockoutSpec], engine: str = "auto"
) -> Float[torch.Tensor, "spec d_vocab"]:
    """Softmax over the vocabulary at the last position under each spec (float32, on the CPU)."""
    if engine not in ENGINES:
        raise ValueError(f"knockout_probabilities engine={engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "plain" if has_active_hooks(model) else DEFAULT_ENGINE
    if engine in ("exact", "batched"):
        return engine_probabilities(model, prepared, specs, max_batch=BATCH if engine == "batched" else 1)
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
