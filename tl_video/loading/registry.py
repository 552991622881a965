"""The supported families, looked up by the checkpoint's `architectures` entry."""

from __future__ import annotations

from typing import Any

from tl_video.loading.checkpoint import CheckpointError
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.internvl import INTERNVL
from tl_video.loading.llava_next_video import LLAVA_NEXT_VIDEO
from tl_video.loading.llava_onevision import LLAVA_ONEVISION
from tl_video.loading.pllava import PLLAVA
from tl_video.loading.qwen_vl import QWEN2_5_VL, QWEN3_VL
from tl_video.loading.videollama3 import VIDEOLLAMA3

FAMILIES: tuple[FamilyAdapter, ...] = (
    LLAVA_NEXT_VIDEO, LLAVA_ONEVISION, PLLAVA, QWEN2_5_VL, QWEN3_VL, INTERNVL, VIDEOLLAMA3
)


def supported_architectures() -> list[str]:
    return sorted(entry for family in FAMILIES for entry in family.describe())


def family_for(config: dict[str, Any], where: str) -> FamilyAdapter:
    architectures = config.get("architectures") or []
    for family in FAMILIES:
        if family.accepts(config):
            return family
    raise CheckpointError(
        f"{where}: unsupported architecture {architectures or config.get('model_type')!r}"
        f"{_missing_keys(config)}. "
        f"Supported: {', '.join(supported_architectures())}"
    )


def _missing_keys(config: dict[str, Any]) -> str:
    """For an architecture some family takes only with extra config keys: which keys are missing."""
    architectures = config.get("architectures") or []
    for family in FAMILIES:
        missing = [key for key in family.required_config_keys if key not in config]
        if missing and any(arch in family.architectures for arch in architectures):
            return f" without config.json keys {missing} (a plain model, not the {family.name} family)"
    return ""
