"""HF checkpoint -> HookedVideoTransformer: resolve, check, convert, attach the front end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tl_video.loading.checkpoint import (
    CheckpointError,
    check_remote_code,
    check_weight_files,
    error_summary,
    read_config,
    resolve_checkpoint,
)
from tl_video.loading.llama_weights import fill_absent_biases
from tl_video.loading.lora import merge_lora_adapter
from tl_video.loading.published import converted_checkpoint
from tl_video.loading.registry import FAMILIES, family_for, supported_architectures
from tl_video.model.config import AttentionImplementation, VideoTransformerConfig, resolve_device, resolve_dtype
from tl_video.model.placement import plan_placement

__all__ = ["CheckpointError", "FAMILIES", "load_pretrained", "supported_architectures"]


def load_pretrained(
    model_class: type,
    name_or_path: str | Path,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    attn_implementation: AttentionImplementation = "auto",
    keep_hf_model: bool = False,
    lora_adapter: str | Path | None = None,
    pooling_shape: tuple[int, int, int] | None = None,
    lora_alpha: float | None = None,
    lora_scaling: float | None = None,
    base_model: str | Path | None = None,
    devices: list[str | torch.device] | None = None,
    frontend_device: str | torch.device | None = None,
    layers_per_device: list[int] | None = None,
) -> Any:
    """Load a supported VideoLLM as `model_class` (HookedVideoTransformer).

    The HF model is loaded once: its vision tower and projector become the front end, its
    language model is converted into our layout (sharing storage where the layout allows).
    `keep_hf_model=True` also returns the HF model as `model.hf_model` (for parity checks).
    `lora_adapter` (a PEFT LoRA folder or hub id) is merged into the language model first.
    `pooling_shape=(T', h', w')` sets a PLLaVA checkpoint's pooling, and runs an image LLaVA-NeXT
    checkpoint on video through PLLaVA pooling. `lora_alpha` (scaling alpha / r) or `lora_scaling`
    scale the `lora_adapter` when one is given, else LoRA weights stored PEFT-wrapped in the
    checkpoint, instead of an adapter_config.json (`tl_video.loading.published_pllava`). `base_model`
    (hub id or folder) completes a PLLaVA save holding only its LoRA factors and projector.

    `devices=["cuda:0", "cuda:1", ...]` splits the backbone layer-wise over several devices, balanced
    by parameter bytes (or `layers_per_device=[40, 40]`); `frontend_device` puts the vision tower and
    projector on a device of their own (`tl_video.model.placement`, docs/large_models.md).
    """
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    _check_placement_options(device, devices, frontend_device, layers_per_device)
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"name_or_path must be a hub id or a folder path, got {type(name_or_path).__name__} {name_or_path!r}")
    options = _published_options(pooling_shape, lora_alpha, lora_scaling)
    if lora_adapter is not None:  # the scaling arguments then scale the adapter, not weights in the checkpoint
        options = {key: value for key, value in options.items() if key == "pooling_shape"}
    if base_model is not None:
        options["base_model"] = str(resolve_checkpoint(base_model).resolve())
    folder = resolve_checkpoint(name_or_path)
    config = read_config(folder)
    native = converted_checkpoint(folder, config, **options)  # published formats: a cached native copy
    source, converted = folder, native != folder
    if converted:
        folder, config = native, read_config(native)
    check_remote_code(folder, config, trust_remote_code)
    family = family_for(config, str(folder))
    if base_model is not None and (not converted or family.name != "pllava"):
        raise CheckpointError(
            f"{source}: base_model= completes a PLLaVA save of LoRA factors and projector only; this checkpoint is "
            "complete, so drop the argument"
        )
    if ("lora_alpha" in options or "lora_scaling" in options) and (not converted or family.name != "pllava"):
        raise CheckpointError(
            f"{source} holds no PEFT-wrapped LoRA weights; lora_alpha=/lora_scaling= scale those or a lora_adapter= "
            "folder, so drop the argument or pass the adapter"
        )
    if pooling_shape is not None and family.name != "pllava":
        raise CheckpointError(
            f"{folder}/config.json: pooling_shape= applies to PLLaVA-pooled LLaVA checkpoints (and image LLaVA-NeXT "
            f"ones), not to this {family.name} checkpoint; drop the argument"
        )
    check_weight_files(folder)
    hf_model = family.load_hf_model(folder, dtype)
    if pooling_shape is not None:
        hf_model.config.pooling_shape = list(options["pooling_shape"])
    if lora_adapter is not None:
        merge_lora_adapter(
            family.language_model(hf_model), resolve_checkpoint(lora_adapter), lora_alpha=lora_alpha, lora_scaling=lora_scaling
        )
    processor = load_processor(folder, trust_remote_code)
    cfg = VideoTransformerConfig(
        **family.config_fields(hf_model.config),
        dtype=dtype,
        device=str(device or "cpu"),
        model_name=str(name_or_path),
        family=family.name,
        attn_implementation=attn_implementation,
    )
    language_model, lm_head = family.language_model(hf_model), family.lm_head(hf_model)
    frontend = family.build_frontend(hf_model, processor)
    model = model_class(cfg, tokenizer=processor.tokenizer, frontend=frontend, processor=processor)
    state = fill_absent_biases(model, family.convert_weights(language_model, lm_head, cfg))
    own = {name for name in model.state_dict() if not name.startswith("frontend.")}
    missing = sorted(own - set(state))
    if missing:
        raise CheckpointError(f"{folder}: no weights converted for {missing[:8]}")
    state.update({f"frontend.{k}": v for k, v in frontend.state_dict().items()})
    model.load_state_dict(state, strict=True, assign=True)
    if keep_hf_model:
        model.hf_model = [hf_model]  # in a list so it is not registered as a submodule
    model.eval()
    if devices is not None or frontend_device is not None:
        model.place(plan_placement(model, devices or [device or "cpu"], frontend_device, layers_per_device))
    elif device is not None:
        model.to(device)
    return model


def _check_placement_options(device: Any, devices: Any, frontend_device: Any, layers_per_device: Any) -> None:
    """`device` puts the whole model on one device; `devices` splits it; the two do not mix."""
    if devices is not None and device is not None:
        raise ValueError(
            f"device={str(device)!r} and devices={devices!r} both given: use device= for one device, or devices= to "
            "split the model over several (then frontend_device= places the vision tower)"
        )
    if layers_per_device is not None and devices is None:
        raise ValueError("layers_per_device= splits the layers over devices=[...]; pass devices= too")


def _published_options(pooling_shape: Any, lora_alpha: Any, lora_scaling: Any) -> dict[str, Any]:
    """The options a published-format conversion takes, checked; absent ones left out (they key the cache)."""
    options: dict[str, Any] = {}
    if pooling_shape is not None:
        sizes = list(pooling_shape) if isinstance(pooling_shape, (tuple, list)) else []
        if len(sizes) != 3 or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes):
            raise ValueError(f"pooling_shape must be three positive integers (T', h', w'), e.g. (8, 12, 12); got {pooling_shape!r}")
        options["pooling_shape"] = tuple(sizes)
    if lora_alpha is not None and lora_scaling is not None:
        raise ValueError("pass lora_alpha= (scaling alpha / r) or lora_scaling= (the scaling itself), not both")
    for name, value in (("lora_alpha", lora_alpha), ("lora_scaling", lora_scaling)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
            options[name] = float(value)
    return options


# Files a processor is read from: tokenizer (one of these sets) and image/video processor configs.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json")


def load_processor(folder: Path, trust_remote_code: bool) -> Any:
    """The checkpoint's HF processor (tokenizer + image/video processor); failures name the folder's files."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
        if getattr(processor, "tokenizer", None) is None and (folder / "preprocessor_config.json").is_file():
            # a tokenizer and an image processor of a processor class transformers does not know
            # (PLLaVA saves `PllavaProcessor`): pair them as a LLaVA processor
            processor = image_frames_processor(folder, processor)
        return processor
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        present = sorted(p.name for p in folder.iterdir() if p.name in _TOKENIZER_FILES + _PROCESSOR_FILES)
        if not any(name in present for name in _TOKENIZER_FILES[:3]):
            problem = f"no tokenizer file ({', '.join(_TOKENIZER_FILES[:3])})"
        elif not any(name in present for name in _PROCESSOR_FILES):
            problem = f"no processor config ({', '.join(_PROCESSOR_FILES)})"
        else:
            problem = f"unreadable files among {present}"
        raise CheckpointError(
            f"{folder}: the tokenizer/processor could not be loaded: {problem} ({error_summary(error)}); "
            "copy the tokenizer and processor files of the original checkpoint into the folder"
        ) from error


def image_frames_processor(folder: Path, tokenizer: Any) -> Any:
    """A `LlavaProcessor` of the folder's tokenizer and its image processor config read as CLIP's.

    PLLaVA (and the study) process video frames with a `CLIPImageProcessor` built from the
    checkpoint's preprocessor_config.json; the PIL one reproduces transformers-4.x CLIP processing.
    """
    from transformers import AutoTokenizer, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    if not hasattr(tokenizer, "convert_tokens_to_ids"):  # AutoProcessor gave the image processor alone
        tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = CLIPImageProcessorPil.from_pretrained(folder)
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=getattr(tokenizer, "chat_template", None)
    )
