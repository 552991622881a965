"""Independent references for the tests: HF fed from raw inputs, and read-outs computed by hand.

Nothing here calls tl_video. The HF side gets what a user holds, the decoded frames (a copy) and
the prompt as written, and renders them through the checkpoint's own processor and chat template
(`processor.apply_chat_template` with the video inside the conversation), with its own processor
and model loaded from the folder. So a front end that mangles frames or prompt text, or a loader
that edits shared weights, cannot make the reference agree with it.

The logit-lens helpers recompute every read-out from HF's `output_hidden_states` and the raw
weights, in float64: `hidden_states[l]` is the input of decoder layer l, `hidden_states[-1]` is
already final-normed, and the last layer's un-normed output is taken with a forward hook on that
HF layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@lru_cache(maxsize=32)
def reference_processor(folder: str | Path) -> Any:
    """The checkpoint's processor, loaded by HF on its own (not the one our model holds); once per folder."""
    return AutoProcessor.from_pretrained(folder)


@lru_cache(maxsize=32)
def reference_model(folder: str | Path, dtype: torch.dtype = torch.float32, hf_class: Any = None) -> nn.Module:
    """The HF model loaded on its own from the folder; its language model switched to eager attention
    (so it returns patterns), its vision tower left on HF's default kernel, as a user would run it.
    Loaded once per (folder, dtype, class); the tests only read it."""
    hf_class = hf_class or AutoModelForImageTextToText
    model = hf_class.from_pretrained(folder, dtype=dtype).eval()
    model.set_attn_implementation({"": "eager", "text_config": "eager"})
    return model


def hf_chat_inputs(
    processor: Any, frames: np.ndarray, prompt: str, *, system: str | None = None, **processor_kwargs: Any
) -> dict[str, torch.Tensor]:
    """HF's own inputs for one user turn holding the video then the prompt, as HF documents it.

    `frames` is copied first, so nothing done to the caller's array afterwards reaches the reference.
    """
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    video = np.array(frames, copy=True)
    messages.append({"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": prompt}]})
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs=processor_kwargs,
    )
    return dict(inputs)


def assert_same_prompt(
    tokens: Int[torch.Tensor, "1 pos"], reference_ids: Int[torch.Tensor, "1 pos"], video_token_id: int
) -> None:
    """Our tokens are HF's ids with each video placeholder replaced by a (distinct) video token id."""
    ours, reference = tokens[0].tolist(), reference_ids[0].tolist()
    assert len(ours) == len(reference), f"we prepared {len(ours)} tokens, HF's processor {len(reference)}"
    is_video = [token == video_token_id for token in reference]
    text_mismatch = [i for i, (a, b, video) in enumerate(zip(ours, reference, is_video)) if not video and a != b]
    assert not text_mismatch, f"text tokens differ from HF's at positions {text_mismatch[:10]}"
    video_ids = [a for a, video in zip(ours, is_video) if video]
    assert len(set(video_ids)) == len(video_ids) and video_token_id not in video_ids


# --------------------------------------------------------------------------- logit lens by hand


@dataclass(frozen=True)
class LensWeights:
    """The raw matrices a lens reads through, float64, straight from the HF modules."""

    embed: Float[torch.Tensor, "vocab d_model"]
    unembed: Float[torch.Tensor, "vocab d_model"]
    norm_weight: Float[torch.Tensor, "d_model"]
    norm_eps: float


def lens_weights(hf: nn.Module) -> LensWeights:
    language_model = hf.model.language_model
    return LensWeights(
        embed=hf.get_input_embeddings().weight.detach().double(),
        unembed=hf.get_output_embeddings().weight.detach().double(),
        norm_weight=language_model.norm.weight.detach().double(),
        norm_eps=float(getattr(language_model.norm, "variance_epsilon", getattr(language_model.norm, "eps", 1e-6))),
    )


def hand_rms_norm(x: Float[torch.Tensor, "... d_model"], weights: LensWeights) -> Float[torch.Tensor, "... d_model"]:
    """RMSNorm as written in the Llama/Qwen papers: x / sqrt(mean(x^2) + eps) * weight."""
    x = x.double()
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + weights.norm_eps) * weights.norm_weight


def hand_probabilities(
    residual: Float[torch.Tensor, "... d_model"], weights: LensWeights, *, norm: bool, matrix: str = "unembed"
) -> Float[torch.Tensor, "... vocab"]:
    """softmax(M · (norm(h) or h)) with M the unembedding or (paper-compatible) the input embedding."""
    x = hand_rms_norm(residual, weights) if norm else residual.double()
    return torch.softmax(x @ getattr(weights, matrix).T, dim=-1)


@dataclass(frozen=True)
class LayerStreams:
    """Per decoder layer of one HF forward: its input, its output, and the final-normed output."""

    layer_inputs: list[Float[torch.Tensor, "pos d_model"]]  # hidden_states[l], l = 0 .. n-1
    layer_outputs: list[Float[torch.Tensor, "pos d_model"]]  # hidden_states[l + 1], the last one un-normed
    final_normed: Float[torch.Tensor, "pos d_model"]  # hidden_states[-1]


@torch.no_grad()
def hf_layer_streams(hf: nn.Module, inputs: dict[str, torch.Tensor]) -> LayerStreams:
    """HF's residual stream at every layer boundary of one sequence (batch of 1)."""
    layers = hf.model.language_model.layers
    captured = []
    handle = layers[-1].register_forward_hook(
        lambda module, args, output: captured.append((output[0] if isinstance(output, tuple) else output).detach())
    )
    try:
        hidden = hf(**inputs, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    n = len(layers)
    assert len(hidden) == n + 1 and len(captured) == 1
    inputs_ = [hidden[layer][0] for layer in range(n)]
    outputs = [hidden[layer + 1][0] for layer in range(n - 1)] + [captured[0][0]]
    return LayerStreams(layer_inputs=inputs_, layer_outputs=outputs, final_normed=hidden[-1][0])


def paper_compat_rows(streams: LayerStreams) -> list[Float[torch.Tensor, "pos d_model"]]:
    """The paper's released-code rows (docs/methods.md): inputs of layers 0 .. n-2, then the final-normed output."""
    return streams.layer_inputs[:-1] + [streams.final_normed]


def assert_top_k_matches(
    top_ids: Int[torch.Tensor, "... k"], top_probabilities: Float[torch.Tensor, "... k"],
    expected: Float[torch.Tensor, "... vocab"], *, atol: float, where: str,
) -> None:
    """Our top-k is a top-k of the hand distribution: same values, and our ids carry those values there.

    Robust to exact ties (either tied id is a correct answer), strict about everything else.
    """
    k = top_ids.shape[-1]
    values = expected.topk(k, dim=-1).values
    diff = max_diff(top_probabilities.double(), values)
    assert diff <= atol, f"{where}: top-{k} probabilities differ from the hand computation by {diff:.2e}"
    at_ours = expected.gather(-1, top_ids.long())
    diff = max_diff(at_ours, values)
    assert diff <= atol, f"{where}: our top-{k} ids are not the hand computation's (probability gap {diff:.2e})"


# --------------------------------------------------------------------------- half precision


def assert_half_precision_close(
    ours: torch.Tensor, hf_half: torch.Tensor, hf_fp32: torch.Tensor, *, where: str
) -> None:
    """Our half-precision logits are as close to HF's float32 as HF's own half-precision run is.

    Tolerances from tests/tolerances.py (measured over 20 videos x 6 families).
    """
    from tests.tolerances import HALF_ERROR_VS_HF_HALF_ERROR, LOGITS_BF16_VS_FP32, LOGITS_FP16_VS_FP32

    bound = {torch.bfloat16: LOGITS_BF16_VS_FP32, torch.float16: LOGITS_FP16_VS_FP32}[ours.dtype]
    error, hf_error = max_diff(ours, hf_fp32), max_diff(hf_half, hf_fp32)
    assert error <= bound, f"{where}: {ours.dtype} logits are {error:.3f} from HF float32 (bound {bound})"
    assert error <= HALF_ERROR_VS_HF_HALF_ERROR * hf_error, (
        f"{where}: {ours.dtype} error {error:.4f} vs HF float32 is over {HALF_ERROR_VS_HF_HALF_ERROR}x "
        f"HF's own {ours.dtype} error {hf_error:.4f}"
    )
