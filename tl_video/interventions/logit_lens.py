"""Logit lens for VideoLLMs (docs/methods.md, "Generation probability by layer", "Logit lens on video tokens").

`option_probabilities_by_layer` reads each layer's residual output at the last position as a
distribution over the vocabulary and keeps the answer letters: the "true option's probability
rises right after integration" curve. `video_token_top_k` reads every video token at every
layer and keeps the top-k tokens, in chunks so [positions, d_vocab] never exceeds `chunk_size`
rows. By default both apply the final RMSNorm, as the model does at its output;
`apply_final_norm=False` skips it at every layer; `paper_compat=True` in
`option_probabilities_by_layer` reproduces the paper's LLaVA runs (raw residuals, the last layer
final-normed, so its row is the model's own output), and `paper_compat=True` in
`video_token_top_k` reads what the paper's released code read, through the input embedding
matrix W_E: the (un-normed) inputs of layers 0 .. n-2 (row 0 is the raw projector output), then
the final-normed output of the last layer (HF's ``hidden_states[-1]``) -- n rows in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int

from tl_video.prompts.prepared import PreparedInput


def _readout(model: Any, residual: torch.Tensor, apply_final_norm: bool) -> torch.Tensor:
    if apply_final_norm:
        residual = model.ln_final(residual)
    return model.unembed(residual).float()


@torch.no_grad()
def option_probabilities_by_layer(
    model: Any,
    prepared: PreparedInput,
    option_tokens: dict[str, int],
    *,
    apply_final_norm: bool = True,
    paper_compat: bool = False,
    fwd_hooks: list | None = None,
) -> tuple[list[str], Float[torch.Tensor, "n_layers n_options"]]:
    """(letters, probabilities): softmax(W_U norm(resid_post_l)) at the last position, per layer.

    `paper_compat=True` reads the reference code's hidden states instead: the raw residual after
    layers 0..n-2 and the final-normed output of the last layer, so the last row is the model's own
    output distribution (`apply_final_norm` must then stay True: the variant fixes the norm per layer).
    """
    if paper_compat and not apply_final_norm:
        raise ValueError("paper_compat=True fixes the norm per layer (raw, then final-normed last layer); "
                         "leave apply_final_norm=True")
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    with model.hooks(fwd_hooks=fwd_hooks or []):
        _, cache = model.run_with_cache(prepared.tokens, names_filter=lambda name: name in names)
    residuals = torch.stack([cache[name][:, -1] for name in names])  # [layer, batch, d_model]
    if paper_compat:
        logits = torch.cat([_readout(model, residuals[:-1], False), _readout(model, residuals[-1:], True)])
    else:
        logits = _readout(model, residuals, apply_final_norm)
    probabilities = logits.softmax(-1)[:, 0]
    letters = list(option_tokens)
    return letters, probabilities[:, [option_tokens[letter] for letter in letters]]


@dataclass(frozen=True)
class VideoTokenLens:
    """Top-k readout of every video token at every probed point of the residual stream."""

    top_ids: Int[torch.Tensor, "layer video_token k"]
    top_probabilities: Float[torch.Tensor, "layer video_token k"]
    layers: tuple[int, ...]  # row index = layer number of the probed point (see `points`)
    video_grid: tuple[tuple[int, int, int], ...]  # (frame, row, col) of each video token
    probes: str  # what was read, for records: "resid_post @ W_U (final norm)" etc.
    points: tuple[str, ...] = ()  # per row, the probed point in words: "output of L1", "input of L3", ...


@torch.no_grad()
def video_token_top_k(
    model: Any,
    prepared: PreparedInput,
    *,
    k: int = 10,
    apply_final_norm: bool = True,
    paper_compat: bool = False,
    chunk_size: int = 256,
) -> VideoTokenLens:
    """Top-k vocabulary of every video token at every layer (one row per layer).

    Default: softmax(W_U norm(resid_post_l)), the output of each layer. ``paper_compat``: rows
    0 .. n-2 are softmax(W_E resid_pre_l) (inputs of layers 0 .. n-2, no norm) and row n-1 is
    softmax(W_E ln_final(resid_post_{n-1})), as the reference code read them.
    """
    if k < 1 or k > model.cfg.d_vocab:
        raise ValueError(f"k={k} must be between 1 and the vocabulary size {model.cfg.d_vocab}")
    n_layers = model.cfg.n_layers
    if paper_compat:
        names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers - 1)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
        points = tuple(f"input of L{layer + 1}" for layer in range(n_layers - 1)) + (f"output of L{n_layers} (final norm)",)
    else:
        names = [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]
        points = tuple(f"output of L{layer + 1}" for layer in range(n_layers))
    _, cache = model.run_with_cache(prepared.tokens, names_filter=lambda name: name in names)
    positions = prepared.layout.positions("video_tokens")
    if positions.numel() == 0:
        raise ValueError("this input has no video tokens")
    residuals = torch.stack([cache[name][0, positions.to(cache[name].device)] for name in names])
    if paper_compat:  # the last row is read after the final norm, the others raw
        residuals = torch.cat([residuals[:-1], model.ln_final(residuals[-1:])])
    flat = residuals.flatten(0, 1)  # [layer * video_token, d_model]
    embedding = model.W_E.T.to(flat.device) if paper_compat else None  # one copy when the model spans devices
    ids, probabilities = [], []
    for chunk in flat.split(chunk_size):
        if paper_compat:
            logits = (chunk @ embedding).float()
        else:
            logits = _readout(model, chunk[None], apply_final_norm)[0]
        top = logits.softmax(-1).topk(k)
        ids.append(top.indices)
        probabilities.append(top.values)
    shape = (len(names), positions.numel(), k)
    probes = "resid_pre of L1..L(n-1), then ln_final(resid_post of Ln), @ W_E (paper_compat)" if paper_compat else (
        f"resid_post @ W_U ({'final norm' if apply_final_norm else 'no norm'})"
    )
    return VideoTokenLens(
        top_ids=torch.cat(ids).reshape(shape).cpu(),
        top_probabilities=torch.cat(probabilities).reshape(shape).cpu(),
        layers=tuple(range(n_layers)),
        video_grid=prepared.layout.video_grid,
        probes=probes,
        points=points,
    )
