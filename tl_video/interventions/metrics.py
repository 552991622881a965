"""Metrics on logits for patching and knockout: each returns one value per example, [batch].

Take the mean for TransformerLens's scalar patching mode (`lambda logits: metric(logits).mean()`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Float

Metric = Callable[[Float[torch.Tensor, "batch pos d_vocab"]], Float[torch.Tensor, "batch"]]


def logit_difference(true_token: int, false_tokens: Sequence[int], position: int = -1) -> Metric:
    """Logit of the true option minus the mean logit of the false ones, at `position`."""
    false_index = torch.tensor(list(false_tokens))
    if false_index.numel() == 0:
        raise ValueError("logit_difference needs at least one false token")

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, position]
        return last[:, true_token] - last[:, false_index.to(last.device)].mean(-1)

    return metric


def answer_probability(token: int, position: int = -1) -> Metric:
    """Softmax probability of `token` at `position`."""
    return lambda logits: logits[:, position].float().softmax(-1)[:, token]


def normalized_recovery(metric: Metric, clean_value: torch.Tensor, corrupted_value: torch.Tensor) -> Metric:
    """(metric - corrupted) / (clean - corrupted): 0 = no effect of the patch, 1 = clean restored."""
    scale = clean_value - corrupted_value
    if bool((scale.abs() < 1e-12).any()):
        raise ValueError("clean and corrupted metrics coincide for some example; recovery is undefined there")
    return lambda logits: (metric(logits) - corrupted_value.to(logits.device)) / scale.to(logits.device)


def mean_of(metric: Metric) -> Callable[[torch.Tensor], torch.Tensor]:
    """The scalar form TransformerLens's default `reduce="scalar"` expects."""
    return lambda logits: metric(logits).mean()
