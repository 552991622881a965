"""The supported families, looked up by the checkpoint's `architectures` entry."""

from __future__ import annotations

from typing import Any

from tl_video.loading.checkpoint import CheckpointError
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.llava_next_video import LLAVA_NEXT_VIDEO

FAMILIES: tuple[FamilyAdapter, ...] = (LLAVA_NEXT_VIDEO,)


def supported_architectures() -> list[str]:
    return sorted(arch for family in FAMILIES for arch in family.architectures)


def family_for(config: dict[str, Any], where: str) -> FamilyAdapter:
    architectures = config.get("architectures") or []
    for family in FAMILIES:
        if any(arch in family.architectures for arch in architectures):
            return family
    raise CheckpointError(
        f"{where}: unsupported architecture {architectures or config.get('model_type')!r}. "
        f"Supported: {', '.join(supported_architectures())}"
    )
