"""What every tiny builder shares: the byte tokenizer, the LM text config, seeded widened weights, the save.

A family's builder (`tiny_<family>.py`) states only what differs: its chat template and special
tokens, its HF classes, its vision config and processor, and the LM fields of its family (rope
theta, norm epsilon, biases). The LM shape options (`LMOptions`) are the same for every family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, TypedDict

import torch
from torch import nn

from tl_video.testing.random_init import widen_random_weights
from tl_video.testing.tokenizer import build_byte_tokenizer


class LMOptions(TypedDict, total=False):
    """Shape and released-config fields of the language model every builder takes as keywords.

    `head_dim` is written to config.json only when given (each family's HF default otherwise), so a
    checkpoint whose heads x head_dim differs from hidden_size (Qwen3-VL-4B, InternVL3.5) is one
    keyword away.
    """

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    head_dim: int
    tie_word_embeddings: bool


#: The LM shape of every tiny checkpoint unless a builder or a caller says otherwise.
TINY_LM: LMOptions = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "tie_word_embeddings": False,
}


def chat_tokenizer(
    special_tokens: dict[str, str], extra_tokens: list[str], template: str, with_chat_template: bool
) -> tuple[Any, str | None]:
    """(byte tokenizer with the family's specials, the template or None when `with_chat_template` is off)."""
    template = template if with_chat_template else None
    return build_byte_tokenizer(special_tokens, extra_tokens, chat_template=template), template


def lm_options(options: LMOptions, **family_defaults: Any) -> dict[str, Any]:
    """TINY_LM, then the family's defaults, then the caller's options; `head_dim` only when set."""
    merged = {**TINY_LM, **family_defaults, **options}
    if merged.get("head_dim") is None:
        merged.pop("head_dim", None)
    return merged


def text_config(tokenizer: Any, options: LMOptions, *, bos: bool = False, **family_fields: Any) -> dict[str, Any]:
    """The text config dict of a tiny LM: shape from `options`, ids from the tokenizer, family fields last.

    `bos=False` writes `bos_token_id: None` (ChatML families have none); `family_fields` are the
    family's own entries (`rope_parameters`, `rms_norm_eps`, `model_type`, `attention_bias`, ...).
    """
    return {
        "vocab_size": len(tokenizer),
        **options,
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id if bos else None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **family_fields,
    }


def save_checkpoint(
    folder: str | Path,
    model_class: type,
    config: Any,
    processor: Any,
    *,
    seed: int = 0,
    init: Callable[[nn.Module], None] | None = widen_random_weights,
) -> Path:
    """Build `model_class(config)` from `seed` (the global RNG untouched), re-draw its weights with
    `init` (None keeps transformers' initialisation), and `save_pretrained` it with the processor."""
    folder = Path(folder)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_class(config).eval()
        if init is not None:
            init(model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def edit_config(folder: str | Path, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Rewrite the saved config.json through `edit` (e.g. into the layout a released checkpoint has)."""
    path = Path(folder) / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text())), indent=2))


def legacy_rope_keys(text: dict[str, Any], **rope_scaling: Any) -> dict[str, Any]:
    """A text config with transformers-4.x rope keys, as released config.json files hold them:
    `rope_theta` beside a `rope_scaling` dict (plus `rope_scaling` entries such as `type: "mrope"`)."""
    text = dict(text)
    rope = dict(text.pop("rope_parameters"))
    text["rope_theta"] = rope.pop("rope_theta")
    text["rope_scaling"] = {**rope, **rope_scaling}
    return text
