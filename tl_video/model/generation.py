"""Greedy generation with a key/value cache; hooks active around the call apply at every step.

While `greedy_generate` runs, `generation_prompt_length()` gives the prompt's length, so a hook
that meets a sequence longer than the prompt it was compiled for (the no-cache path recomputes
prompt + generated tokens) knows the extra positions are generated tokens (knockout uses this).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Callable

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from tl_video.model.kv_cache import KeyValueCache

if TYPE_CHECKING:
    from tl_video.model.hooked_video_transformer import HookedVideoTransformer

_PROMPT_LENGTH: ContextVar[int | None] = ContextVar("tl_video_generation_prompt_length", default=None)


def generation_prompt_length() -> int | None:
    """The prompt length of the `greedy_generate` call in progress; None outside generation."""
    return _PROMPT_LENGTH.get()


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
    on_logits: Callable[[Float[torch.Tensor, "batch d_vocab"]], None] | None = None,
) -> Int[torch.Tensor, "batch pos_plus_new"]:
    """Append up to `max_new_tokens` argmax tokens; finished rows are padded with EOS.

    `on_logits` sees each step's last-position logits, the ones its tokens are chosen from (e.g. to
    check them for NaN without running the answer again)."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    tokens = model._check_tokens(tokens)
    if eos_token_id is None and model.tokenizer is not None:
        eos_token_id = model.tokenizer.eos_token_id
    token = _PROMPT_LENGTH.set(tokens.shape[1])
    try:
        return _generate(
            model, tokens, max_new_tokens, stop_at_eos, eos_token_id, attention_mask, use_past_kv_cache, verbose, on_logits
        )
    finally:
        _PROMPT_LENGTH.reset(token)


def _generate(
    model: "HookedVideoTransformer",
    tokens: Int[torch.Tensor, "batch pos"],
    max_new_tokens: int,
    stop_at_eos: bool,
    eos_token_id: int | None,
    attention_mask: Int[torch.Tensor, "batch pos"] | None,
    use_past_kv_cache: bool,
    verbose: bool,
    on_logits: Callable[[torch.Tensor], None] | None,
) -> Int[torch.Tensor, "batch pos_plus_new"]:
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
        if on_logits is not None:
            on_logits(logits[:, -1])
        next_token = logits[:, -1].argmax(-1).to(tokens.device)  # logits live on the unembedding's device
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
