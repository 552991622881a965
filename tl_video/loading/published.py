"""Published checkpoints in a layout no native family reads, converted once into a native folder.

A published format (PLLaVA's own config, InternVL-Chat's remote-code model, VideoLLaMA3's remote-code
model, ...) is recognised from its config.json and rewritten into the layout of a transformers class
we already load (config.json, safetensors, tokenizer and processor files). The conversion runs
without executing any remote code, writes into a cache folder under a temporary name and renames it
when complete, so an interrupted conversion is never read, and it is done again only when a source
file or an option changes. The cache is `$TL_VIDEO_CACHE/converted` (default `~/.cache/tl_video`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tl_video.loading.checkpoint import CheckpointError, error_summary, read_json_object


@dataclass(frozen=True, kw_only=True)
class PublishedFormat:
    """How to recognise one published on-disk format and write it as a native checkpoint."""

    name: str  # e.g. "internvl_chat"; names the converted folder
    accepts: Callable[[dict[str, Any]], bool]  # config.json -> whether the folder is in this format
    # (source folder, empty destination folder, options) -> writes a complete native checkpoint there
    convert: Callable[[Path, Path, dict[str, Any]], None]
    version: int = 1  # bump when the conversion changes, so cached folders are rebuilt
    # (config.json, folder) -> whether it is in this format, for formats told apart by their weight
    # names too (PEFT-wrapped LoRA keys); when set it decides instead of `accepts`
    accepts_folder: Callable[[dict[str, Any], Path], bool] | None = None


def published_formats() -> tuple[PublishedFormat, ...]:
    """Every registered format, imported lazily (each module pulls its own transformers classes)."""
    from tl_video.loading.published_internvl_chat import PUBLISHED_INTERNVL_CHAT
    from tl_video.loading.published_pllava import PUBLISHED_PLLAVA
    from tl_video.loading.published_videollama3 import PUBLISHED_VIDEOLLAMA3

    return (PUBLISHED_VIDEOLLAMA3, PUBLISHED_PLLAVA, PUBLISHED_INTERNVL_CHAT)


def converted_checkpoint(folder: Path, config: dict[str, Any], **options: Any) -> Path:
    """`folder` itself when it is already native, else the cached native conversion of it."""
    for published in published_formats():
        matches = published.accepts_folder(config, folder) if published.accepts_folder else published.accepts(config)
        if matches:
            return _cached_conversion(published, folder, options)
    return folder


def cache_root() -> Path:
    """Where converted checkpoints are kept: `$TL_VIDEO_CACHE/converted`, default `~/.cache/tl_video/converted`."""
    base = os.environ.get("TL_VIDEO_CACHE") or Path.home() / ".cache" / "tl_video"
    return Path(base) / "converted"


def _cached_conversion(published: PublishedFormat, folder: Path, options: dict[str, Any]) -> Path:
    destination = cache_root() / f"{published.name}-{_fingerprint(published, folder, options)}"
    if destination.is_dir():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        published.convert(folder, scratch, dict(options))
        os.replace(scratch, destination)  # atomic: a half-written conversion is never found
    except CheckpointError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    except OSError as error:
        shutil.rmtree(scratch, ignore_errors=True)
        if destination.is_dir():  # another process finished the same conversion first
            return destination
        raise CheckpointError(
            f"{folder}: converting the {published.name} checkpoint into {destination.parent} failed "
            f"({error_summary(error)}); free disk space there or point TL_VIDEO_CACHE at another folder"
        ) from error
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return destination


def _fingerprint(published: PublishedFormat, folder: Path, options: dict[str, Any]) -> str:
    """Changes when any source file (name, size, mtime), an option or the conversion version changes."""
    files = sorted(
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    )
    payload = json.dumps(
        [str(folder.resolve()), published.version, files, options], sort_keys=True, default=repr
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def weight_shards(folder: Path) -> list[str]:
    """The safetensors files of a checkpoint: those its index names, else every `*.safetensors`."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map") or {}
        return sorted(set(weight_map.values()))
    return sorted(path.name for path in folder.glob("*.safetensors"))


# (shard path, source key, loader of the source tensor) -> the native tensors it becomes ({} drops it)
TensorRewrite = Callable[[Path, str, Callable[[], torch.Tensor]], dict[str, torch.Tensor]]


def rewrite_shards(source: Path, destination: Path, rewrite: TensorRewrite) -> dict[str, str]:
    """Every source shard written under its own file name with native tensors, dtype unchanged, and a
    new index; returns the weight map (native key -> shard)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    weight_map: dict[str, str] = {}
    total_size = 0
    for shard in weight_shards(source):
        renamed: dict[str, torch.Tensor] = {}
        with safe_open(source / shard, framework="pt") as handle:
            for key in handle.keys():
                renamed.update(rewrite(source / shard, key, lambda key=key: handle.get_tensor(key)))
        save_file(renamed, destination / shard, metadata={"format": "pt"})
        weight_map.update({key: shard for key in renamed})
        total_size += sum(tensor.numel() * tensor.element_size() for tensor in renamed.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (destination / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return weight_map
