"""PLLaVA / LLaVA-NeXT-Video-FT checkpoints as published, written as native PLLaVA folders.

Three published shapes become the folder the `pllava` family loads (`LlavaForConditionalGeneration`
config.json with `pooling_shape`, safetensors in the transformers-4.x key layout):

- a checkpoint saved by PLLaVA's own code (`PllavaForConditionalGeneration`, `model_type: "llava"`,
  e.g. byminji/LLaVA-NeXT-7B-Video-FT, ermu2001/pllava-7b): config.json renamed to
  `LlavaForConditionalGeneration`, PLLaVA's training-only keys dropped;
- weights holding PEFT-wrapped LoRA (`language_model.base_model.model.…q_proj.base_layer.weight`,
  `…lora_A.default.weight`, `…lora_B.default.weight`, as PLLaVA saves a LoRA fine-tune whole):
  merged, W + scale · B A in float32 cast back to W's dtype, scale from `lora_scaling=`, else
  `lora_alpha=` / r, else the folder's adapter_config.json; the same with a config.json naming
  `LlavaForConditionalGeneration` plus `pooling_shape`;
- a PLLaVA save of the LoRA factors and projector alone (its training without DeepSpeed) with
  `base_model=` (the LLaVA-NeXT it was trained from): the base's weights, the save's replacing them;
- an image LLaVA-NeXT checkpoint (`LlavaNextForConditionalGeneration`, e.g.
  llava-hf/llava-v1.6-vicuna-7b-hf) with `pooling_shape=(T', h', w')`: the study's ImageLLM
  baseline, the image model run on video through PLLaVA pooling, as the reference code loads it
  (its `image_newline` and AnyRes settings unused and dropped).

Weight files that need no change are linked, not copied; a shard with renamed, merged or dropped
tensors is rewritten under its own name, tensors in their stored dtype. Tokenizer and processor
files are copied as they are (a folder with an image processor only is read by `load_processor`).
`pooling_shape=` also overrides a PLLaVA checkpoint's own (the study passes 8-12-12).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tl_video.loading.checkpoint import CheckpointError, check_weight_files, read_json_object
from tl_video.loading.lora import LoraScaling, merged_weight, read_lora_config
from tl_video.loading.published import PublishedFormat

PLLAVA_ARCHITECTURE = "PllavaForConditionalGeneration"
LLAVA_ARCHITECTURE = "LlavaForConditionalGeneration"
LLAVA_NEXT_ARCHITECTURE = "LlavaNextForConditionalGeneration"
#: PllavaConfig keys that only steer PLLaVA's training code.
_TRAINING_ONLY_KEYS = ("gradient_checkpointing", "force_eager")
#: PllavaConfig's defaults. transformers 4.x saves a config's differences from its class defaults
#: only, so a published config.json may lack any of these; they are written out for LlavaConfig.
PLLAVA_DEFAULTS = {
    "image_token_index": 32000, "projector_hidden_act": "gelu", "vision_feature_select_strategy": "default",
    "vision_feature_layer": -2, "pooling_method": "avg", "pooling_shape": [8, 16, 16], "frame_shape": [24, 24],
    "num_frames": 1, "use_pooling": True,
}
#: LlavaConfig's default CLIP tower (PllavaConfig's and LlavaNextConfig's too), used when config.json has no vision_config.
_DEFAULT_VISION = {"model_type": "clip_vision_model", "intermediate_size": 4096, "hidden_size": 1024, "patch_size": 14,
                   "image_size": 336, "num_hidden_layers": 24, "num_attention_heads": 16, "vocab_size": 32000,
                   "projection_dim": 768}
#: LlavaNextConfig keys of its AnyRes image path, which PLLaVA pooling does not use.
_ANYRES_KEYS = ("image_grid_pinpoints", "use_image_newline_parameter")
_DROPPED_TENSORS = ("image_newline",)  # LLaVA-NeXT's AnyRes row separator; PLLaVA has none
_INDEX = "model.safetensors.index.json"
_PEFT_SEGMENT = re.compile(r"(^|\.)base_model\.model\.")
_LORA_TENSOR = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_BASE_LAYER = re.compile(r"^(?P<module>.+)\.base_layer\.(?P<param>weight|bias)$")
_UNSUPPORTED_PEFT = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")


def accepts(config: dict[str, Any]) -> bool:
    architectures = config.get("architectures") or []
    return PLLAVA_ARCHITECTURE in architectures or LLAVA_NEXT_ARCHITECTURE in architectures


def accepts_folder(config: dict[str, Any], folder: Path) -> bool:
    """PLLaVA's own or an image LLaVA-NeXT config.json, or a PLLaVA-style LLaVA whose weights hold PEFT-wrapped LoRA."""
    if accepts(config):
        return True
    architectures = config.get("architectures") or []
    if LLAVA_ARCHITECTURE not in architectures or "pooling_shape" not in config:
        return False
    try:
        names = weight_names(folder)
    except Exception:  # an unreadable file: check_weight_files names it when the folder loads as it is
        return False
    return any(_is_peft_tensor(key) for keys in names.values() for key in keys)


def weight_names(folder: Path) -> dict[str, list[str]]:
    """{shard file name: tensor names}, read from the safetensors headers (no tensor is loaded)."""
    names: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        if path.name.startswith("adapter_model"):
            continue  # a PEFT adapter saved beside the checkpoint, not one of its shards
        with safe_open(path, framework="pt") as handle:
            names[path.name] = list(handle.keys())
    return names


def convert(source: Path, destination: Path, options: dict[str, Any]) -> None:
    """Write `source` as a native PLLaVA folder into `destination` (module docstring)."""
    check_weight_files(source)
    config = read_json_object(source / "config.json")
    native = native_config(source, config, options.get("pooling_shape"))
    (destination / "config.json").write_text(json.dumps(native, indent=2, sort_keys=True) + "\n")
    scaling = LoraScaling(
        _adapter_config(source), options.get("lora_alpha"), options.get("lora_scaling")
    )
    write_weights(source, destination, scaling, options)
    # tokenizer and processor files: the base model's (a partial save may lack them), then the source's
    folders = ([Path(options["base_model"])] if "base_model" in options else []) + [source]
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not _is_weight_file(path) and path.name != "config.json":
                shutil.copy2(path, destination / path.name)


def native_config(source: Path, config: dict[str, Any], pooling_shape: Any) -> dict[str, Any]:
    """config.json of the native folder: a LLaVA config plus PLLaVA's pooling keys."""
    architectures = config.get("architectures") or []
    native = {key: value for key, value in config.items() if key not in _TRAINING_ONLY_KEYS}
    native.setdefault("vision_config", dict(_DEFAULT_VISION))
    if PLLAVA_ARCHITECTURE in architectures:
        native = {**PLLAVA_DEFAULTS, **native}
    if LLAVA_NEXT_ARCHITECTURE in architectures:
        if pooling_shape is None:
            raise CheckpointError(
                f"{source}/config.json: architectures {architectures} is an image LLaVA-NeXT checkpoint, with no "
                "pooling_shape; pass pooling_shape=(8, 12, 12) (T', h', w') to from_pretrained to run it on video "
                "through PLLaVA pooling (the ImageLLM baseline)"
            )
        native = {key: value for key, value in native.items() if key not in _ANYRES_KEYS}
        vision = native["vision_config"]
        side = int(vision.get("image_size", 224)) // int(vision.get("patch_size", 32))  # CLIPVisionConfig defaults
        native.update(pooling_method="avg", use_pooling=True, frame_shape=[side, side], image_seq_length=side * side)
    native.update(architectures=[LLAVA_ARCHITECTURE], model_type="llava")
    if pooling_shape is not None:
        native.update(pooling_shape=[int(size) for size in pooling_shape], num_frames=int(pooling_shape[0]))
    return native


def write_weights(source: Path, destination: Path, scaling: LoraScaling, options: dict[str, Any]) -> None:
    """Each shard linked when unchanged, else rewritten with PEFT-wrapped LoRA merged and unused tensors dropped.

    With `base_model` the source is a partial save (LoRA factors and projector, as PLLaVA's training
    writes without DeepSpeed): the base's shards are written, the source's tensors replacing theirs.
    """
    shards = weight_names(source)
    lora = _lora_pairs(source, shards)
    if not lora and ("lora_alpha" in options or "lora_scaling" in options):
        given = "lora_alpha" if "lora_alpha" in options else "lora_scaling"
        raise CheckpointError(
            f"{source} holds no PEFT-wrapped LoRA weights (…lora_A/…lora_B); {given}= applies to those only "
            "(a separate adapter folder goes in lora_adapter=)"
        )
    origin, overrides = source, {}
    if "base_model" in options:
        origin = Path(options["base_model"])
        overrides = {name: (source / shard, key) for shard, keys in shards.items() for key in keys
                     if (name := _target_name(key)) is not None}
        shards = weight_names(origin)
    names = {name for keys in shards.values() for key in keys if (name := _target_name(key)) is not None}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise CheckpointError(
            f"{source} holds tensors that base_model {origin} does not have, e.g. {unknown[:4]}; pass the base model "
            "the checkpoint was trained from"
        )
    unpaired = sorted(module for module in lora if f"{module}.weight" not in names)
    if unpaired:
        hint = ("pass base_model= (the model it was trained from, e.g. llava-hf/llava-v1.6-vicuna-7b-hf)"
                if "base_model" not in options else f"base_model {origin} is not the model it was trained from")
        raise CheckpointError(
            f"{source}: LoRA factors without the weights they update (no base_layer), e.g. {unpaired[:4]}; a save of the "
            f"LoRA factors alone needs its base: {hint}"
        )
    weight_map: dict[str, str] = {}
    total = 0
    for shard, keys in shards.items():
        renamed = {key: _target_name(key) for key in keys}
        if all(name == key and name not in overrides and name.removesuffix(".weight") not in lora
               for key, name in renamed.items()):
            _link(origin / shard, destination / shard)
            tensors_of_shard = keys
            with safe_open(origin / shard, framework="pt") as handle:
                total += sum(_nbytes(handle.get_slice(key)) for key in keys)
        else:
            tensors = _rewritten_shard(origin / shard, renamed, overrides, lora, scaling)
            if not tensors:
                continue
            save_file(tensors, destination / shard, metadata={"format": "pt"})
            tensors_of_shard = list(tensors)
            total += sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
        weight_map.update({key: shard for key in tensors_of_shard})
    if len({*weight_map.values()}) > 1 or (origin / _INDEX).is_file():
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (destination / _INDEX).write_text(json.dumps(index, indent=2) + "\n")


def _rewritten_shard(
    path: Path, renamed: dict[str, str | None], overrides: dict[str, tuple[Path, str]],
    lora: dict[str, dict[str, torch.Tensor]], scaling: LoraScaling,
) -> dict[str, torch.Tensor]:
    """The shard's kept tensors under their native names: replaced by a partial save's, LoRA targets merged."""
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(path, framework="pt") as handle:
        for key, name in renamed.items():
            if name is None:
                continue  # a LoRA factor (merged into its base) or a tensor PLLaVA does not use
            if name in overrides:
                override_path, override_key = overrides[name]
                with safe_open(override_path, framework="pt") as other:
                    tensor = other.get_tensor(override_key)
            else:
                tensor = handle.get_tensor(key)
            module = name.removesuffix(".weight")
            if module in lora and name.endswith(".weight"):
                a, b = lora[module]["A"], lora[module]["B"]
                if a.shape[1] != tensor.shape[1] or b.shape[0] != tensor.shape[0] or a.shape[0] != b.shape[1]:
                    raise CheckpointError(
                        f"{path}: LoRA factors of {module} have shapes A {tuple(a.shape)}, B {tuple(b.shape)}, "
                        f"which do not fit its weight {tuple(tensor.shape)}; the checkpoint is damaged"
                    )
                tensor = merged_weight(tensor, a, b, _scale(path, scaling, module, a.shape[0]))
            tensors[name] = tensor.contiguous()
    return tensors


def _scale(path: Path, scaling: LoraScaling, module: str, rank: int) -> float:
    if scaling.config is None and scaling.lora_alpha is None and scaling.lora_scaling is None:
        raise CheckpointError(
            f"{path.parent}: the weights hold PEFT-wrapped LoRA (r={rank}) but the folder has no adapter_config.json "
            "giving its scaling; pass lora_alpha= to from_pretrained (PLLaVA's scripts: 4 for pllava-7b/13b, r read "
            "from the weights) or lora_scaling="
        )
    return scaling.scale(module, rank)


def _lora_pairs(source: Path, shards: dict[str, list[str]]) -> dict[str, dict[str, torch.Tensor]]:
    """{module (PEFT prefix stripped): {"A": [r, in], "B": [out, r]}}, read from whichever shard holds them."""
    pairs: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    adapters: set[str] = set()
    for shard, keys in shards.items():
        unsupported = [key for key in keys if any(part in key for part in _UNSUPPORTED_PEFT)]
        if unsupported:
            raise CheckpointError(
                f"{source / shard} holds {unsupported[0]!r}: embedding LoRA and DoRA magnitudes are not a plain low-rank "
                "update of a linear weight; merge them with peft (merge_and_unload) and save the result"
            )
        with safe_open(source / shard, framework="pt") as handle:
            for key in keys:
                match = _LORA_TENSOR.match(_strip_peft(key))
                if match is not None:
                    pairs[match["module"]][match["which"]] = handle.get_tensor(key)
                    adapters.add(match["adapter"] or "")
    if len(adapters) > 1:
        raise CheckpointError(
            f"{source} holds LoRA weights of several adapters {sorted(adapters)}; keep one (PEFT's default) and save again"
        )
    return dict(pairs)


def _target_name(key: str) -> str | None:
    """The native name of a stored tensor, or None when it is not kept (LoRA factors, image_newline)."""
    name = _strip_peft(key)
    if name in _DROPPED_TENSORS or _LORA_TENSOR.match(name):
        return None
    base = _BASE_LAYER.match(name)
    return f"{base['module']}.{base['param']}" if base else name


def _strip_peft(key: str) -> str:
    return _PEFT_SEGMENT.sub(r"\1", key, count=1)


def _is_peft_tensor(key: str) -> bool:
    return bool(_PEFT_SEGMENT.search(key) or ".base_layer." in key or _LORA_TENSOR.match(key))


def _adapter_config(source: Path):
    return read_lora_config(source) if (source / "adapter_config.json").is_file() else None


def _is_weight_file(path: Path) -> bool:
    return (path.name.endswith((".safetensors", ".bin", ".pt", ".pth")) or path.name.endswith(".index.json"))


def _link(source: Path, destination: Path) -> None:
    """A symbolic link to the (resolved) source file, or a copy where links cannot be made."""
    try:
        os.symlink(source.resolve(), destination)
    except OSError:
        shutil.copy2(source, destination)


def _nbytes(slice_: Any) -> int:
    count = 1
    for size in slice_.get_shape():
        count *= size
    return count * _DTYPE_BYTES[slice_.get_dtype()]


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

PUBLISHED_PLLAVA = PublishedFormat(
    name="pllava",
    accepts=accepts,
    accepts_folder=accepts_folder,
    convert=convert,
    version=1,
)
