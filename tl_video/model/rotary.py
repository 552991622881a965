"""Rotary position embedding: 1D RoPE with HF's scaling types, and multimodal M-RoPE.

Inverse frequencies come from transformers' own `ROPE_INIT_FUNCTIONS`, so every static rope
scaling type a checkpoint declares (default, linear, llama3, yarn, ...) matches HF exactly.
LongRoPE (Phi-3's `longrope`, formerly `su`) holds two frequency sets and, like HF's
`longrope_frequency_update`, uses the long factors for a whole forward pass when its largest
position id + 1 exceeds `original_max_position_embeddings`, the short factors otherwise.
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
_DYNAMIC_ROPE_TYPES = ("dynamic",)
# Keys of a Qwen-VL `rope_parameters` dict that concern M-RoPE (held as config fields instead).
_MROPE_KEYS = ("mrope_section", "mrope_interleaved")


def rope_inverse_frequencies(
    cfg: VideoTransformerConfig, seq_len: int | None = None
) -> tuple[Float[torch.Tensor, "half"], float]:
    """(inv_freq [d_head/2], attention_scaling) for the config's rope type, via transformers.

    `seq_len` only matters for `longrope`: above `original_max_position_embeddings` the long
    factors are returned, otherwise (or None) the short ones.
    """
    rope_type = cfg.rope_parameters.get("rope_type", "default")
    if rope_type == "longrope":
        _check_longrope(cfg)
    if rope_type in _DYNAMIC_ROPE_TYPES:
        raise NotImplementedError(
            f"rope_type={rope_type!r} rescales frequencies with the sequence length and is not "
            "supported; supported: " + ", ".join(sorted(set(ROPE_INIT_FUNCTIONS) - set(_DYNAMIC_ROPE_TYPES)))
        )
    # M-RoPE keys only say which position row each frequency reads; the frequencies are 1D RoPE's.
    parameters = {k: v for k, v in cfg.rope_parameters.items() if k not in _MROPE_KEYS}
    hf_config = LlamaConfig(  # hidden_size only has to admit n_heads x head_dim (d_model need not)
        hidden_size=cfg.n_heads * cfg.d_head,
        num_attention_heads=cfg.n_heads,
        head_dim=cfg.d_head,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters=parameters,
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
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_config, torch.device("cpu"), seq_len=seq_len)
    return inv_freq.float(), float(attention_scaling)


def _check_longrope(cfg: VideoTransformerConfig) -> None:
    """LongRoPE needs both factor lists of d_head/2 entries and the pre-training length; full rotary only."""
    parameters = cfg.rope_parameters
    missing = [key for key in ("short_factor", "long_factor", "original_max_position_embeddings") if key not in parameters]
    if missing:
        raise ValueError(
            f"rope_type='longrope' needs rope_parameters {missing}; copy them from the checkpoint's "
            "rope_scaling (original_max_position_embeddings may sit at the top of the text config)"
        )
    for key in ("short_factor", "long_factor"):
        if len(parameters[key]) != cfg.d_head // 2:
            raise ValueError(
                f"rope_parameters[{key!r}] has {len(parameters[key])} entries; LongRoPE needs d_head / 2 = {cfg.d_head // 2}"
            )
    if float(parameters.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(
            f"partial_rotary_factor={parameters['partial_rotary_factor']} (rotary on part of each head) is not "
            "supported by the hooked backbone; only full rotary (1.0)"
        )
    if cfg.mrope_section is not None:
        raise ValueError("rope_type='longrope' with M-RoPE (mrope_section) is not supported")


def longrope_uses_long_factors(
    position_ids: Int[torch.Tensor, "batch pos"], original_max_position_embeddings: int
) -> bool:
    """HF's rule (`longrope_frequency_update`): long factors when max(position_ids) + 1 > original length."""
    return int(position_ids.max()) + 1 > original_max_position_embeddings


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
        self.longrope_original_length: int | None = None
        if cfg.rope_parameters.get("rope_type") == "longrope":  # short set above, long set here
            self.longrope_original_length = int(cfg.rope_parameters["original_max_position_embeddings"])
            long_inv_freq, _ = rope_inverse_frequencies(cfg, seq_len=self.longrope_original_length + 1)
            self.register_buffer("long_inv_freq", long_inv_freq, persistent=False)
        if cfg.mrope_section is not None:  # [d_head/2]: the position row (t, h, w) of each frequency
            axis = mrope_axis_of_frequency(cfg.mrope_section, cfg.mrope_interleaved, inv_freq.shape[0])
            self.register_buffer("mrope_axis", axis, persistent=False)

    def forward(
        self, position_ids: Int[torch.Tensor, "batch pos"] | Int[torch.Tensor, "3 batch pos"], dtype: torch.dtype
    ) -> tuple[Float[torch.Tensor, "batch pos d_head"], Float[torch.Tensor, "batch pos d_head"]]:
        inv_freq = self.inv_freq.to(torch.float32)
        if self.longrope_original_length is not None and longrope_uses_long_factors(
            position_ids, self.longrope_original_length
        ):
            inv_freq = self.long_inv_freq.to(torch.float32)
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
        """Angles [batch pos half] where frequency k reads position row `mrope_axis[k]` (t, h or w)."""
        if position_ids.ndim == 2:  # text-only input: t = h = w
            position_ids = position_ids.unsqueeze(0).expand(3, -1, -1)
        if position_ids.ndim != 3 or position_ids.shape[0] != 3:
            raise ValueError(f"M-RoPE expects position_ids [3, batch, pos], got {tuple(position_ids.shape)}")
        per_axis = position_ids[..., None].float() * inv_freq  # [3, batch, pos, half]
        index = self.mrope_axis.view(1, 1, 1, -1).expand(1, *per_axis.shape[1:])
        return per_axis.gather(0, index).squeeze(0)


def mrope_axis_of_frequency(section: tuple[int, ...], interleaved: bool, half: int) -> Int[torch.Tensor, "half"]:
    """Which position row (0 = t, 1 = h, 2 = w) each of the d_head/2 rotary frequencies reads.

    Chunked (Qwen2.5-VL, `Qwen2_5_VLRotaryEmbedding.recomposition_frequencies`): the first
    section[0] frequencies read t, the next section[1] read h, the rest w; [2, 3, 3] gives
    t t h h h w w w. Interleaved (Qwen3-VL, `Qwen3VLTextRotaryEmbedding`): frequency k reads h if
    k % 3 == 1 and k < 3 * section[1], w if k % 3 == 2 and k < 3 * section[2], else t; [4, 2, 2]
    gives t h w t h w t t. The same row is used for both halves of d_head (`rotate_half`).
    """
    if sum(section) != half:
        raise ValueError(f"mrope_section {tuple(section)} sums to {sum(section)}, expected d_head / 2 = {half}")
    if interleaved:
        axis = torch.zeros(half, dtype=torch.long)
        for row, count in ((1, section[1]), (2, section[2])):
            axis[row : 3 * count : 3] = row
        return axis
    rows = torch.arange(len(section)) % 3
    return torch.repeat_interleave(rows, torch.tensor(section))
