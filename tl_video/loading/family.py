"""A model family adapter states only what differs: HF class, LM config mapping, front end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn

from tl_video.frontend.base import VideoFrontEnd
from tl_video.loading.checkpoint import CheckpointError, error_summary


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
        """Load the HF reference model; missing, unused or wrong-shaped weights are an error, not a log line.

        Unused tensors are refused too (no opt-out): transformers already drops the keys an
        architecture declares ignorable, so any tensor left over means the checkpoint is not the
        architecture its config.json claims, and its numbers would be silently wrong.
        """
        try:
            model, info = self.hf_class().from_pretrained(
                folder, dtype=dtype, use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=True
            )
        except (ValueError, TypeError, KeyError, OSError, StrictDataclassError) as error:
            raise CheckpointError(
                f"{folder}: transformers could not build {self.architectures[0]} from it "
                f"({error_summary(error)}); check config.json and the weight files"
            ) from error
        missing = sorted(info.get("missing_keys", []))
        if missing:
            raise CheckpointError(
                f"{folder} is missing {len(missing)} weights, e.g. {missing[:5]}; the checkpoint is "
                "incomplete (an interrupted download or a wrong folder?)"
            )
        mismatched = sorted(info.get("mismatched_keys", []))
        if mismatched:
            shown = "; ".join(f"{key}: {tuple(saved)} in the file, {tuple(wanted)} from config.json" for key, saved, wanted in mismatched[:4])
            vocab = any("embed_tokens" in key or "lm_head" in key for key, *_ in mismatched)
            hint = (" (the vocabulary size differs from config.json's vocab_size: a resized tokenizer?)" if vocab else "")
            raise CheckpointError(
                f"{folder} has {len(mismatched)} weights of the wrong shape{hint}: {shown}; the weights and "
                "config.json belong to different models"
            )
        unexpected = sorted(info.get("unexpected_keys", []))
        if unexpected:
            raise CheckpointError(
                f"{folder} holds {len(unexpected)} tensors that {self.architectures[0]} does not use, e.g. "
                f"{unexpected[:5]}; the checkpoint is not the architecture its config.json names (remove them "
                "or use the matching config)"
            )
        return model.eval()

