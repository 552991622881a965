"""HF Llama-style language model weights -> our TransformerLens-layout state dict.

Serves every family whose LM is Llama/Vicuna/Qwen2/Qwen3-shaped. Every HF tensor must be used
exactly once and every shape must match; leftovers or gaps raise, naming the keys.
"""

from __future__ import annotations

import einops
import torch
from torch import nn

from tl_video.loading.checkpoint import CheckpointError
from tl_video.model.config import VideoTransformerConfig


def convert_llama_weights(
    language_model: nn.Module, lm_head: nn.Module, cfg: VideoTransformerConfig
) -> dict[str, torch.Tensor]:
    """Map `embed_tokens`, `layers.{l}.self_attn/mlp/*norm`, `norm` and `lm_head` into our names."""
    source = dict(language_model.state_dict())
    source = {key: value for key, value in source.items() if not key.endswith("rotary_emb.inv_freq")}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in source:
            raise CheckpointError(f"the language model has no weight {key!r}; the checkpoint is incomplete")
        used.add(key)
        return source[key]

    def take_optional(key: str) -> torch.Tensor | None:
        return take(key) if key in source else None

    heads = {"h": cfg.n_heads}
    kv_heads = {"h": cfg.n_key_value_heads}
    out: dict[str, torch.Tensor] = {"embed.W_E": take("embed_tokens.weight")}
    for layer in range(cfg.n_layers):
        prefix, ours = f"layers.{layer}.", f"blocks.{layer}."
        attn = prefix + "self_attn."
        out[ours + "ln1.w"] = take(prefix + "input_layernorm.weight")
        out[ours + "ln2.w"] = take(prefix + "post_attention_layernorm.weight")
        out[ours + "attn.W_Q"] = einops.rearrange(take(attn + "q_proj.weight"), "(h d) m -> h m d", **heads)
        out[ours + "attn._W_K"] = einops.rearrange(take(attn + "k_proj.weight"), "(h d) m -> h m d", **kv_heads)
        out[ours + "attn._W_V"] = einops.rearrange(take(attn + "v_proj.weight"), "(h d) m -> h m d", **kv_heads)
        out[ours + "attn.W_O"] = einops.rearrange(take(attn + "o_proj.weight"), "m (h d) -> h d m", **heads)
        for ours_bias, theirs, pattern_heads in (("b_Q", "q_proj", heads), ("_b_K", "k_proj", kv_heads), ("_b_V", "v_proj", kv_heads)):
            bias = take_optional(attn + theirs + ".bias")
            if bias is not None:
                out[ours + "attn." + ours_bias] = einops.rearrange(bias, "(h d) -> h d", **pattern_heads)
        o_bias = take_optional(attn + "o_proj.bias")
        if o_bias is not None:
            out[ours + "attn.b_O"] = o_bias
        if cfg.qk_norm:
            out[ours + "attn.q_norm.w"] = take(attn + "q_norm.weight")
            out[ours + "attn.k_norm.w"] = take(attn + "k_norm.weight")
        mlp = prefix + "mlp."
        out[ours + "mlp.W_gate"] = take(mlp + "gate_proj.weight").T
        out[ours + "mlp.W_in"] = take(mlp + "up_proj.weight").T
        out[ours + "mlp.W_out"] = take(mlp + "down_proj.weight").T
        for ours_bias, theirs in (("b_gate", "gate_proj"), ("b_in", "up_proj"), ("b_out", "down_proj")):
            bias = take_optional(mlp + theirs + ".bias")
            if bias is not None:
                out[ours + "mlp." + ours_bias] = bias
    out["ln_final.w"] = take("norm.weight")
    out["unembed.W_U"] = lm_head.weight.T
    unused = sorted(set(source) - used)
    if unused:
        raise CheckpointError(f"language-model weights not understood by the converter: {unused[:8]}")
    return out


def fill_absent_biases(model: nn.Module, converted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Zero biases for every bias parameter the checkpoint does not have (e.g. Llama's)."""
    complete = dict(converted)
    for name, parameter in model.named_parameters():
        if name not in complete and name.rsplit(".", 1)[-1].lstrip("_").startswith("b_"):
            complete[name] = torch.zeros_like(parameter)
    return complete
