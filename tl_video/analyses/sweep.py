"""Knockout evaluation at the answer position: the one interface the study's sweeps call.

`knockout_probabilities` returns, for one prepared input and a list of knockout specs, the
softmax at the last position under each spec. This is the seam for the exact sweep engine: a
faster implementation (reusing the clean pass, recomputing only what a knockout changes, batching
specs) replaces the body and must return the same numbers (probabilities within 1e-5 in fp32).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Float

from tl_video.interventions.knockout import KnockoutSpec, knockout_hooks
from tl_video.prompts.prepared import PreparedInput


@torch.no_grad()
def knockout_probabilities(
    model: Any, prepared: PreparedInput, specs: Sequence[KnockoutSpec]
) -> Float[torch.Tensor, "spec d_vocab"]:
    """Softmax over the vocabulary at the last position under each spec (float32, on the CPU)."""
    n_layers = model.cfg.n_layers
    rows = []
    for spec in specs:
        with model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, n_layers)):
            rows.append(model(prepared.tokens)[0, -1].float().softmax(-1).cpu())
    if not rows:
        return torch.zeros(0, model.cfg.d_vocab)
    return torch.stack(rows)
