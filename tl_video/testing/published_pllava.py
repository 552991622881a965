"""Tiny PLLaVA / LLaVA-NeXT checkpoints written the way the published ones are on disk.

- `save_published_pllava`: what PLLaVA's code (transformers 4.40, `PllavaForConditionalGeneration.
  save_pretrained` + `PllavaProcessor.save_pretrained`) writes, as in byminji/LLaVA-NeXT-7B-Video-FT
  (full fine-tune) and ermu2001/pllava-7b (LoRA fine-tune saved whole, PEFT-wrapped): config.json
  of a `PllavaConfig` (`architectures: ["PllavaForConditionalGeneration"]` or, optionally,
  `LlavaForConditionalGeneration`; `model_type: "llava"`; `pooling_method`, `pooling_shape`,
  `frame_shape`, `num_frames`, `use_pooling`, `gradient_checkpointing`, `force_eager`;
  `torch_dtype: "bfloat16"`; a 4.x `text_config` with `rope_theta`), bfloat16 weights in
  `model-0000k-of-0000n.safetensors` shards with `model.safetensors.index.json`, tensor names in
  the 4.x layout (`language_model.model.*`, `language_model.lm_head.*`, `vision_tower.vision_model.*`,
  `multi_modal_projector.*`) or the 5.x one, a tokenizer, and a CLIP image processor only
  (`preprocessor_config.json` with `processor_class: "PllavaProcessor"`, plus PllavaProcessor's
  `processor_config.json`): no video processor. With `lora=` the language model is PEFT-wrapped as
  PLLaVA wraps it (`get_peft_model(model.language_model, LoraConfig(r, lora_alpha, target_modules))`):
  `language_model.base_model.model.model.layers.i.self_attn.q_proj.base_layer.weight` and
  `…q_proj.lora_A.default.weight` / `…lora_B.default.weight`, every other LM tensor under
  `language_model.base_model.model.`.
- `save_published_llava_next`: an image LLaVA-NeXT checkpoint as llava-hf publishes it
  (llava-v1.6-vicuna-7b-hf): `LlavaNextForConditionalGeneration` config with AnyRes settings,
  float16 shards with an index, 4.x names including `image_newline`, and a `LlavaNextProcessor`
  (LLaVA-NeXT image processor, tokenizer, chat template) saved as transformers 4.x saved it.

Each returns a `PublishedCheckpoint`: the folder, a plain native PLLaVA folder of the same base
weights in the same dtype (`reference`, for the HF oracle), and the LoRA factors written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
)

from tl_video.loading.published_pllava import PLLAVA_DEFAULTS
from tl_video.testing.random_init import widen_random_weights
from tl_video.testing.tiny_pllava import PLLAVA_TEMPLATE, SPECIAL_TOKENS, save_tiny_pllava
from tl_video.testing.tokenizer import build_byte_tokenizer

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


@dataclass(frozen=True)
class PublishedCheckpoint:
    folder: Path
    reference: Path  # a native PLLaVA folder holding the same base weights (pre-LoRA), for the oracle
    # {"language_model.model.layers.i.self_attn.x_proj": (A [r, in], B [out, r])} as written
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def save_published_pllava(
    folder: str | Path,
    *,
    architecture: str = "PllavaForConditionalGeneration",
    layout: str = "4.x",
    lora: dict[str, Any] | None = None,
    adapter_config: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    shards: int = 3,
    seed: int = 0,
    num_frames: int = 4,
    pooling_shape: tuple[int, int, int] | None = None,
) -> PublishedCheckpoint:
    """A PLLaVA checkpoint as PLLaVA's code saves it (module docstring).

    `lora={"r": 4, "lora_alpha": 8, "target_modules": ("q_proj", "v_proj")}` wraps the language
    model's targets PEFT-style with random trained factors; `adapter_config=True` also writes the
    adapter_config.json PEFT would (PLLaVA's own saves have none: the scaling is an argument).
    """
    if layout not in ("4.x", "5.x"):
        raise ValueError(f"layout must be '4.x' or '5.x', got {layout!r}")
    folder = Path(folder)
    reference = save_tiny_pllava(folder.parent / f"{folder.name}-reference", seed=seed, num_frames=num_frames,
                                 pooling_shape=pooling_shape)
    base = {key: value.to(dtype) for key, value in load_file(reference / "model.safetensors").items()}
    save_file(base, reference / "model.safetensors", metadata={"format": "pt"})  # the oracle holds the same rounding
    tensors, factors = _peft_wrapped(base, lora, seed, layout) if lora else (_layout(base, layout), {})
    folder.mkdir(parents=True, exist_ok=True)
    _write_shards(folder, tensors, shards)
    tiny_config = json.loads((reference / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(_pllava_config(tiny_config, architecture, dtype), indent=2))
    for name in ("tokenizer.json",):
        shutil.copy2(reference / name, folder / name)
    _write_pllava_processor_files(folder, reference, tiny_config["vision_config"]["image_size"])
    if lora and adapter_config:
        (folder / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": lora["r"], "lora_alpha": lora["lora_alpha"], "bias": "none",
            "target_modules": list(lora["target_modules"]), "task_type": "CAUSAL_LM", "lora_dropout": 0.05,
        }, indent=2))
    return PublishedCheckpoint(folder=folder, reference=reference, lora=factors)


def save_published_llava_next(
    folder: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float16, shards: int = 2, image_size: int = 32,
    patch_size: int = 8,
) -> PublishedCheckpoint:
    """An image LLaVA-NeXT checkpoint as llava-hf publishes it (module docstring); `reference` is the folder itself."""
    folder = Path(folder)
    tokenizer = build_byte_tokenizer(SPECIAL_TOKENS, ["<image>"], chat_template=PLLAVA_TEMPLATE)
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
        patch_size=patch_size, projection_dim=32,
    )
    pinpoints = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]]
    config = LlavaNextConfig(
        vision_config=vision_config, text_config=text_config, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_grid_pinpoints=pinpoints, image_seq_length=(image_size // patch_size) ** 2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaNextForConditionalGeneration(config).eval()
        widen_random_weights(model)
    scratch = folder.parent / f".{folder.name}-scratch"
    model.save_pretrained(scratch)  # transformers 5 saves the 4.x tensor names (image_newline included)
    tensors = {key: value.to(dtype) for key, value in load_file(scratch / "model.safetensors").items()}
    saved_config = json.loads((scratch / "config.json").read_text())
    shutil.rmtree(scratch)
    folder.mkdir(parents=True, exist_ok=True)
    _write_shards(folder, tensors, shards)
    (folder / "config.json").write_text(json.dumps(_four_x_config(saved_config, dtype), indent=2))
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)  # transformers 4.x kept it in chat_template.json
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["processor_class"] = "LlavaNextProcessor"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": PLLAVA_TEMPLATE}))
    (folder / "processor_config.json").write_text(json.dumps(
        {"patch_size": patch_size, "processor_class": "LlavaNextProcessor", "vision_feature_select_strategy": "default"}
    ))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        **_clip_preprocessor(image_size), "image_processor_type": "LlavaNextImageProcessor", "do_pad": True,
        "image_grid_pinpoints": pinpoints, "processor_class": "LlavaNextProcessor",
    }, indent=2))
    return PublishedCheckpoint(folder=folder, reference=folder)


# --------------------------------------------------------------------------- pieces


def _layout(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """4.x names as saved by transformers 4.x (and 5's save_pretrained), or the 5.x in-memory names."""
    if layout == "4.x":
        return dict(state)
    renames = (("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
               ("vision_tower.vision_model.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector."))
    out = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def _peft_wrapped(
    base: dict[str, torch.Tensor], lora: dict[str, Any], seed: int, layout: str
) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The state dict of the model with its LM wrapped by PEFT, as `save_pretrained(state_dict=...)` writes it.

    4.x: PLLaVA wraps `model.language_model` (a LlamaForCausalLM), so every LM tensor moves under
    `language_model.base_model.model.`. 5.x: the whole model wrapped, `base_model.model.` first.
    """
    generator = torch.Generator().manual_seed(seed + 1)
    r, targets = int(lora["r"]), tuple(lora["target_modules"])
    out, factors = {}, {}
    for key, value in base.items():
        module, _, param = key.rpartition(".")
        wrapped = key.startswith("language_model.") and module.rsplit(".", 1)[-1] in targets
        name = _layout({key: value}, layout).popitem()[0]
        prefix = name.split(".", 1)
        if layout == "4.x":
            name = f"language_model.base_model.model.{prefix[1]}" if prefix[0] == "language_model" else name
        else:
            name = f"base_model.model.{name}"
        if not wrapped:
            out[name] = value
            continue
        stem = name[: -len(".weight")]
        a = (torch.randn(r, value.shape[1], generator=generator) / value.shape[1] ** 0.5).to(value.dtype)
        b = (torch.randn(value.shape[0], r, generator=generator) * 0.3).to(value.dtype)  # a trained B is not 0
        out[f"{stem}.base_layer.weight"] = value
        out[f"{stem}.lora_A.default.weight"] = a
        out[f"{stem}.lora_B.default.weight"] = b
        factors[module] = (a, b)
    return out, factors


def _write_shards(folder: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    """`model-0000k-of-0000n.safetensors` files of about equal size and their index (one file: model.safetensors)."""
    names = sorted(tensors)
    if shards <= 1:
        save_file({name: tensors[name].contiguous() for name in names}, folder / "model.safetensors", metadata={"format": "pt"})
        return
    chunks = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for index, chunk in enumerate(chunks, start=1):
        file = f"model-{index:05d}-of-{shards:05d}.safetensors"
        save_file({name: tensors[name].contiguous() for name in chunk}, folder / file, metadata={"format": "pt"})
        weight_map.update({name: file for name in chunk})
    total = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )


def _pllava_config(tiny: dict[str, Any], architecture: str, dtype: torch.dtype) -> dict[str, Any]:
    """config.json as `PllavaConfig.save_pretrained` (transformers 4.40) writes it: only what differs
    from the class defaults (`to_diff_dict`), nested configs against their own classes' defaults."""
    config = _four_x_config(tiny, dtype)
    config.update(architectures=[architecture], vocab_size=tiny["text_config"]["vocab_size"], transformers_version="4.40.0")
    for key in ("multimodal_projector_bias", "image_seq_length"):  # not PllavaConfig fields
        config.pop(key, None)
    config["text_config"] = {key: value for key, value in config["text_config"].items() if key != "head_dim"}  # 4.40 had none
    defaults = {**PLLAVA_DEFAULTS, "ignore_index": -100, "gradient_checkpointing": False, "force_eager": False,
                "vocab_size": 32000}
    config = {key: value for key, value in config.items() if key not in defaults or defaults[key] != value}
    config["text_config"] = _diff(config["text_config"], {**LlamaConfig().to_dict(), "rope_theta": 10000.0, "rope_scaling": None})
    config["vision_config"] = _diff(config["vision_config"], CLIPVisionConfig().to_dict())
    return config


def _diff(nested: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A nested config without the entries equal to its class defaults (`model_type` always kept)."""
    return {key: value for key, value in nested.items() if key == "model_type" or defaults.get(key, object()) != value}


def _four_x_config(saved: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """A transformers-5 config.json in 4.x spelling: `torch_dtype`, and `rope_theta` in the text config."""
    config = {key: value for key, value in saved.items() if key != "dtype"}
    text = dict(config["text_config"])
    rope = text.pop("rope_parameters", None) or {}
    text.update(rope_theta=rope.get("rope_theta", 10000.0), rope_scaling=None, torch_dtype=_DTYPE_NAMES[dtype])
    config.update(text_config=text, torch_dtype=_DTYPE_NAMES[dtype], transformers_version="4.40.0")
    return config


def _clip_preprocessor(image_size: int) -> dict[str, Any]:
    return {
        "crop_size": {"height": image_size, "width": image_size}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD, "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": image_size},
    }


def _write_pllava_processor_files(folder: Path, reference: Path, image_size: int) -> None:
    """`PllavaProcessor.save_pretrained`: a CLIP preprocessor_config.json, its processor_config.json, the tokenizer config."""
    tokenizer_config = json.loads((reference / "tokenizer_config.json").read_text())
    tokenizer_config.update(processor_class="PllavaProcessor", chat_template=PLLAVA_TEMPLATE)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        **_clip_preprocessor(image_size), "image_processor_type": "CLIPImageProcessor", "processor_class": "PllavaProcessor",
        # read by 4.x's CLIPImageProcessor from the LLaVA-NeXT base and saved back as attributes
        "do_pad": True, "image_grid_pinpoints": [[image_size, 2 * image_size], [2 * image_size, image_size]],
    }, indent=2))
    (folder / "processor_config.json").write_text(json.dumps(
        {"center_pad": False, "longest_edge": 762, "processor_class": "PllavaProcessor", "shortest_edge": 336}, indent=2
    ))
