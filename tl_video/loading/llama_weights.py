"""HF Llama-style language model weights -> our TransformerLens-layout state dict.

Serves every family whose LM is Llama/Vicuna/Qwen2/Qwen3/Phi-3-shaped. Phi-3 fuses the query,
key and value projections (`qkv_proj`: q rows, then k rows, then v rows) and the gate and up
projections (`gate_up_proj`: gate rows, then up rows, as `Phi3MLP.forward` chunks them); they are
split here into the same separate matrices. Every HF tensor must be used exactly once and every
shape must match; leftovers or gaps raise, naming the keys.
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

    def split_rows(key: str, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        fused = take(key)
        if fused.shape[0] != sum(sizes):
            raise CheckpointError(
                f"the fused weight {key!r} has {fused.shape[0]} rows, expected {' + '.join(map(str, sizes))} "
                "from the config's heads, head_dim and intermediate_size"
            )
        return tuple(fused.split(list(sizes), dim=0))

    q_rows, kv_rows = cfg.n_heads * cfg.d_head, cfg.n_key_value_heads * cfg.d_head

    heads = {"h": cfg.n_heads}
    kv_heads = {"h": cfg.n_key_value_heads}
    out: dict[str, torch.Tensor] = {"embed.W_E": take("embed_tokens.weight")}
    for layer in range(cfg.n_layers):
        prefix, ours = f"layers.{layer}.", f"blocks.{layer}."
        attn = prefix + "self_attn."
        out[ours + "ln1.w"] = take(prefix + "input_layernorm.weight")
        out[ours + "ln2.w"] = take(prefix + "post_attention_layernorm.weight")
        if attn + "qkv_proj.weight" in source:  # Phi-3
            w_q, w_k, w_v = split_rows(attn + "qkv_proj.weight", (q_rows, kv_rows, kv_rows))
        else:
            w_q, w_k, w_v = (take(attn + f"{name}_proj.weight") for name in "qkv")
        out[ours + "attn.W_Q"] = einops.rearrange(w_q, "(h d) m -> h m d", **heads)
        out[ours + "attn._W_K"] = einops.rearrange(w_k, "(h d) m -> h m d", **kv_heads)
        out[ours + "attn._W_V"] = einops.rearrange(w_v, "(h d) m -> h m d", **kv_heads)
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
        if mlp + "gate_up_proj.weight" in source:  # Phi-3
            w_gate, w_up = split_rows(mlp + "gate_up_proj.weight", (cfg.d_mlp, cfg.d_mlp))
        else:
            w_gate, w_up = take(mlp + "gate_proj.weight"), take(mlp + "up_proj.weight")
        out[ours + "mlp.W_gate"] = w_gate.T
        out[ours + "mlp.W_in"] = w_up.T
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
