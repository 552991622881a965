"""A model family adapter states only what differs: HF class, LM config mapping, front end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tl_video.frontend.base import VideoFrontEnd
from tl_video.loading.checkpoint import CheckpointError


@dataclass(frozen=True, kw_only=True)
class FamilyAdapter:
    name: str  # e.g. "llava_next_video"
    architectures: tuple[str, ...]  # HF `architectures` entries this adapter accepts
    hf_class: Callable[[], type]  # returns the transformers model class (imported lazily)
    config_fields: Callable[[Any], dict[str, Any]]  # HF config -> VideoTransformerConfig fields
    language_model: Callable[[nn.Module], nn.Module]  # HF model -> its decoder (LlamaModel, ...)
    lm_head: Callable[[nn.Module], nn.Module]
    build_frontend: Callable[[nn.Module, Any], VideoFrontEnd]  # (HF model, processor) -> front end
    convert_weights: Callable[..., dict[str, torch.Tensor]]  # (language_model, lm_head, cfg) -> state
    # config.json keys that must also be present (an architecture shared with other models, e.g.
    # PLLaVA's `pooling_shape` on a plain `LlavaForConditionalGeneration`)
    required_config_keys: tuple[str, ...] = ()

    def accepts(self, config: dict[str, Any]) -> bool:
        """Whether a checkpoint's config.json belongs to this family."""
        architectures = config.get("architectures") or []
        return any(arch in self.architectures for arch in architectures) and all(
            key in config for key in self.required_config_keys
        )

    def describe(self) -> list[str]:
        """Its architectures as listed in errors, each with the config keys it needs."""
        needs = f" (config.json with {', '.join(self.required_config_keys)})" if self.required_config_keys else ""
        return [f"{arch}{needs}" for arch in self.architectures]

    def load_hf_model(self, folder: Path, dtype: torch.dtype) -> nn.Module:
        """Load the HF reference model; missing or unexpected weights are an error, not a warning."""
        model, info = self.hf_class().from_pretrained(
            folder, dtype=dtype, use_safetensors=True, output_loading_info=True
        )
        missing = sorted(info.get("missing_keys", []))
        if missing:
            raise CheckpointError(
                f"{folder} is missing {len(missing)} weights, e.g. {missing[:5]}; the checkpoint is "
                "incomplete (an interrupted download or a wrong folder?)"
            )
        mismatched = info.get("mismatched_keys", [])
        if mismatched:
            raise CheckpointError(f"{folder} has weights of the wrong shape: {list(mismatched)[:5]}")
        return model.eval()
