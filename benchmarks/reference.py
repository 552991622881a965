"""The reference research method on the HF model: each blocked layer's 4D attention mask replaced.

This is how attention-knockout studies are usually run: the HF model in eager attention, and for
every layer that blocks edges, a forward pre-hook that swaps that decoder layer's additive causal
mask for one with the blocked (query, key) entries set to finfo.min. One full forward per
configuration. The language model runs on the same `inputs_embeds` our model builds (so the vision
tower is excluded on both sides); logits come from HF's own `lm_head` over every position.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float


class ReferenceKnockout:
    """Knockout probabilities from the HF model by per-layer mask replacement (eager attention)."""

    def __init__(self, hf: Any, inputs_embeds: Float[torch.Tensor, "1 pos d_model"]):
        self.hf = hf
        self.language_model = hf.model.language_model
        self.inputs_embeds = inputs_embeds

    @torch.no_grad()
    def probabilities(self, blocked: dict[int, Bool[torch.Tensor, "query_pos key_pos"]]) -> Float[torch.Tensor, "d_vocab"]:
        """Softmax at the last position with the given edges blocked per layer (float32, CPU)."""
        embeds = self.inputs_embeds
        n, minimum = embeds.shape[1], torch.finfo(embeds.dtype).min
        causal = torch.full((n, n), minimum, dtype=embeds.dtype, device=embeds.device).triu(1)
        masks = {layer: causal.masked_fill(matrix.to(embeds.device), minimum)[None, None] for layer, matrix in blocked.items()}
        handles = []
        for layer, mask in masks.items():
            def replace(module: Any, args: tuple, kwargs: dict, mask: torch.Tensor = mask) -> tuple[tuple, dict]:
                kwargs["attention_mask"] = mask
                return args, kwargs
            handles.append(self.language_model.layers[layer].register_forward_pre_hook(replace, with_kwargs=True))
        try:
            self.hf.set_attn_implementation("eager")
            hidden = self.language_model(inputs_embeds=embeds, use_cache=False).last_hidden_state
            logits = self.hf.lm_head(hidden)
        finally:
            for handle in handles:
                handle.remove()
        return logits[0, -1].float().softmax(-1).cpu()

    @torch.no_grad()
    def forward(self, implementation: str) -> Float[torch.Tensor, "1 pos d_vocab"]:
        """A plain HF forward (no knockout) with the given attention implementation ("eager", "sdpa")."""
        self.hf.set_attn_implementation(implementation)
        return self.hf.lm_head(self.language_model(inputs_embeds=self.inputs_embeds, use_cache=False).last_hidden_state)
