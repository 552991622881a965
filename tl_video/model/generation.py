"""Greedy generation with a key/value cache; hooks active around the call apply at every step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from tqdm.auto import tqdm

from tl_video.model.kv_cache import KeyValueCache

if TYPE_CHECKING:
    from tl_video.model.hooked_video_transformer import HookedVideoTransformer


@torch.no_grad()
def greedy_generate(
    model: "HookedVideoTransformer",
    tokens: Int[torch.Tensor, "batch pos"],
    max_new_tokens: int = 16,
    stop_at_eos: bool = True,
    eos_token_id: int | None = None,
    attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    use_past_kv_cache: bool = True,
    verbose: bool = False,
) -> Int[torch.Tensor, "batch pos_plus_new"]:
    """Append up to `max_new_tokens` argmax tokens; finished rows are padded with EOS."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    tokens = model._check_tokens(tokens)
    if eos_token_id is None and model.tokenizer is not None:
        eos_token_id = model.tokenizer.eos_token_id
    batch = tokens.shape[0]
    finished = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
    cache = KeyValueCache.empty(model.cfg.n_layers) if use_past_kv_cache else None
    mask = attention_mask
    step_input = tokens
    for _ in tqdm(range(max_new_tokens), disable=not verbose, desc="generate"):
        if cache is None:
            logits = model(tokens, attention_mask=mask)
        else:
            logits = model(step_input, attention_mask=mask, past_kv_cache=cache)
        next_token = logits[:, -1].argmax(-1)
        if stop_at_eos and eos_token_id is not None:
            next_token = next_token.masked_fill(finished, eos_token_id)
            finished = finished | (next_token == eos_token_id)
        tokens = torch.cat([tokens, next_token[:, None]], dim=-1)
        step_input = next_token[:, None]
        if cache is not None:
            mask = None if attention_mask is None else torch.ones(batch, 1, dtype=torch.long, device=tokens.device)
        elif attention_mask is not None:
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=mask.device)], dim=-1)
        if stop_at_eos and bool(finished.all()):
            break
    return tokens
