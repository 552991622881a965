"""Rotary position embedding: 1D RoPE with HF's scaling types, and multimodal M-RoPE.

Inverse frequencies come from transformers' own `ROPE_INIT_FUNCTIONS`, so every static rope
scaling type a checkpoint declares (default, linear, llama3, yarn, ...) matches HF exactly.
cos/sin are built once per forward and shared by every layer.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import nn
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tl_video.model.config import VideoTransformerConfig

# Types whose frequencies depend on the running sequence length: not reproduced here.
_DYNAMIC_ROPE_TYPES = ("dynamic", "longrope")


def rope_inverse_frequencies(cfg: VideoTransformerConfig) -> tuple[Float[torch.Tensor, "half"], float]:
    """(inv_freq [d_head/2], attention_scaling) for the config's rope type, via transformers."""
    rope_type = cfg.rope_parameters.get("rope_type", "default")
    if rope_type in _DYNAMIC_ROPE_TYPES:
        raise NotImplementedError(
            f"rope_type={rope_type!r} rescales frequencies with the sequence length and is not "
            "supported; supported: " + ", ".join(sorted(set(ROPE_INIT_FUNCTIONS) - set(_DYNAMIC_ROPE_TYPES)))
        )
    hf_config = LlamaConfig(
        hidden_size=cfg.d_model,
        num_attention_heads=cfg.n_heads,
        head_dim=cfg.d_head,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters=dict(cfg.rope_parameters),
    )
    if rope_type == "default":
        base = hf_config.rope_parameters["rope_theta"]
        dim = cfg.d_head
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        return inv_freq, 1.0
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise NotImplementedError(
            f"unknown rope_type={rope_type!r}; known: {sorted(ROPE_INIT_FUNCTIONS)}"
        )
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_config, torch.device("cpu"))
    return inv_freq.float(), float(attention_scaling)


def rotate_half(x: Float[torch.Tensor, "... d_head"]) -> Float[torch.Tensor, "... d_head"]:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension (HF/GPT-NeoX layout)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(
    x: Float[torch.Tensor, "batch pos head_index d_head"],
    cos: Float[torch.Tensor, "batch pos d_head"],
    sin: Float[torch.Tensor, "batch pos d_head"],
) -> Float[torch.Tensor, "batch pos head_index d_head"]:
    """Rotate queries or keys; cos/sin broadcast over the head axis (hence the unsqueeze)."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Turns position ids into (cos, sin); 1D ids [batch pos] or M-RoPE ids [3 batch pos]."""

    def __init__(self, cfg: VideoTransformerConfig):
        super().__init__()
        self.cfg = cfg
        inv_freq, self.attention_scaling = rope_inverse_frequencies(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(
        self, position_ids: Int[torch.Tensor, "batch pos"] | Int[torch.Tensor, "3 batch pos"], dtype: torch.dtype
    ) -> tuple[Float[torch.Tensor, "batch pos d_head"], Float[torch.Tensor, "batch pos d_head"]]:
        inv_freq = self.inv_freq.to(torch.float32)
        if self.cfg.mrope_section is None:
            if position_ids.ndim != 2:
                raise ValueError(f"1D rotary expects position_ids [batch, pos], got {tuple(position_ids.shape)}")
            freqs = position_ids[..., None].float() * inv_freq
        else:
            freqs = self._mrope_frequencies(position_ids, inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        cos = angles.cos() * self.attention_scaling
        sin = angles.sin() * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)

    def _mrope_frequencies(
        self, position_ids: Int[torch.Tensor, "3 batch pos"], inv_freq: Float[torch.Tensor, "half"]
    ) -> Float[torch.Tensor, "batch pos half"]:
        """Each frequency reads the t, h or w position: in chunks (Qwen2.5-VL) or interleaved (Qwen3-VL)."""
        if position_ids.ndim == 2:  # text-only input: t = h = w
            position_ids = position_ids.unsqueeze(0).expand(3, -1, -1)
        per_axis = position_ids[..., None].float() * inv_freq  # [3, batch, pos, half]
        section = self.cfg.mrope_section
        if self.cfg.mrope_interleaved:
            axis_of_frequency = torch.zeros(inv_freq.shape[0], dtype=torch.long, device=inv_freq.device)
            for axis, count in ((1, section[1]), (2, section[2])):
                axis_of_frequency[axis : count * 3 : 3] = axis
        else:
            axis_of_frequency = torch.repeat_interleave(
                torch.arange(len(section), device=inv_freq.device), torch.tensor(section, device=inv_freq.device)
            )
        index = axis_of_frequency.view(1, 1, 1, -1).expand(1, *per_axis.shape[1:])
        return per_axis.gather(0, index).squeeze(0)
