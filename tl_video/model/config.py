"""Configuration of the hooked language backbone, a TransformerLens config dataclass.

Family differences (biases, q/k-norm, rope type, M-RoPE) are fields here, never checks on
the model name. The fields TransformerLens's tools read keep TransformerLens's meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Optional  # noqa: F401 - TransformerLensConfig's inherited annotations name Optional

import torch
from transformer_lens.config import TransformerLensConfig

AttentionImplementation = Literal["auto", "eager", "sdpa"]
DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A floating torch dtype from a dtype or its name ("bfloat16", "torch.float16", "bf16", ...)."""
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(
        f"dtype={dtype!r} is not a floating-point dtype; use one of torch.float32, torch.bfloat16, "
        f"torch.float16, torch.float64 or their names ({', '.join(sorted(DTYPES))})"
    )


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """A torch device that exists on this machine (None stays None); otherwise one line saying why."""
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or 'mps'") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={device!r}: CUDA is not available on this machine (torch sees no GPU); use 'cpu'")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device={device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: Apple MPS is not available on this machine; use 'cpu'")
    return resolved


@dataclass
class VideoTransformerConfig(TransformerLensConfig):
    """A decoder-only, pre-norm, rotary, SwiGLU language backbone (Llama / Qwen / Vicuna)."""

    # --- fields TransformerLens's tools read; values fixed for this architecture family ---
    normalization_type: str | None = "RMS"  # RMSNorm before attention, MLP and unembedding
    final_rms: bool = True  # the final norm is an RMSNorm too
    uses_rms_norm: bool = True
    gated_mlp: bool = True  # SwiGLU: W_out(act(x W_gate) * (x W_in))
    act_fn: str = "silu"  # activation of the gate
    positional_embedding_type: str = "rotary"
    parallel_attn_mlp: bool = False  # attention and MLP read resid_pre / resid_mid in sequence
    attn_only: bool = False
    default_prepend_bos: bool = False  # the chat template places BOS itself
    model_name: str = "custom"  # hub id or folder the weights came from
    # --- TransformerLens switches, same meaning as in HookedTransformer ---
    use_attn_result: bool = False  # compute hook_result: per-head output [batch pos head d_model]
    use_split_qkv_input: bool = False  # separate hook_q/k/v_input per head
    use_attn_in: bool = False  # one hook_attn_in per head feeding q, k and v
    use_hook_mlp_in: bool = False  # a hook_mlp_in copy of resid_mid before ln2
    # --- architecture details that differ between families ---
    rope_parameters: dict[str, Any] = field(
        default_factory=lambda: {"rope_type": "default", "rope_theta": 10000.0}
    )  # the HF `rope_parameters` dict (rope_type, rope_theta, factor, ...)
    mrope_section: tuple[int, ...] | None = None  # (t, h, w) frequency split for M-RoPE; None = 1D
    mrope_interleaved: bool = False  # Qwen3-VL interleaves t/h/w frequencies instead of chunking
    attn_qkv_bias: bool = False  # q_proj, k_proj, v_proj have biases (Qwen2)
    attn_out_bias: bool = False  # o_proj has a bias
    mlp_bias: bool = False  # gate/up/down projections have biases
    qk_norm: bool = False  # RMSNorm over d_head on queries and keys before rotary (Qwen3)
    max_position_embeddings: int = 4096  # HF value, used by some rope scaling types
    attn_implementation: AttentionImplementation = "auto"  # auto = SDPA unless a hook needs scores
    family: str = "custom"  # the front-end family (e.g. "llava_next_video")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_key_value_heads is None:
            self.n_key_value_heads = self.n_heads
        if self.n_heads % self.n_key_value_heads != 0:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_key_value_heads={self.n_key_value_heads}"
            )
        if self.attn_implementation not in ("auto", "eager", "sdpa"):
            raise ValueError(
                f"attn_implementation={self.attn_implementation!r}; expected 'auto', 'eager' or 'sdpa'"
            )
        self.dtype = resolve_dtype(self.dtype)
        if self.mrope_section is not None:
            self.mrope_section = tuple(self.mrope_section)

    @property
    def n_query_groups(self) -> int:
        """Query heads sharing one key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_key_value_heads

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (dtype as a string)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["dtype"] = str(self.dtype).removeprefix("torch.")
        return values
