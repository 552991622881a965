"""Find a checkpoint folder (local or hub) and read its config safely."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Files a VideoLLM checkpoint needs; weights only as safetensors (no pickle).
_CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as it is; the message says what to change."""


# Checkpoints shipped inside the package, loadable by name like a hub id.
BUILTIN_MODELS = {"tl-video/toy-temporal": Path(__file__).resolve().parents[1] / "builtin" / "toy_temporal"}


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A built-in name or a local folder as is; otherwise a hub id downloaded (safetensors and configs only)."""
    if str(name_or_path) in BUILTIN_MODELS:
        folder = BUILTIN_MODELS[str(name_or_path)]
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"the built-in model {name_or_path!r} is not in this installation ({folder}); "
                "train it with `python -m tl_video.training.train_toy`"
            )
        return folder
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; pass the checkpoint folder that holds config.json")
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith(("/", ".")):
        raise FileNotFoundError(f"no checkpoint folder at {path} (and {name!r} is not a hub id like 'org/name')")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name, allow_patterns=_CHECKPOINT_PATTERNS))
    except Exception as error:  # offline, unknown repo, gated, ...
        raise FileNotFoundError(
            f"{name!r} is not a local folder and could not be fetched from the model hub "
            f"({type(error).__name__}: {error}). Download it once and pass the folder path."
        ) from error


def error_summary(error: BaseException, limit: int = 240) -> str:
    """`Type: first lines` of a library error on one line, for messages that wrap it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2]) or "(no message)"
    return f"{type(error).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold one object; any problem names the file (and line) and the fix."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise CheckpointError(f"{path} is not UTF-8 text (byte {error.start}, line {line}); re-save it as UTF-8 JSON") from error
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}") from error
    except RecursionError as error:
        raise CheckpointError(f"{path} nests JSON arrays/objects too deeply to read; it is not a config file") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object {{...}}, got a JSON {type(value).__name__}")
    return value


def read_config(folder: Path) -> dict[str, Any]:
    """config.json as a dict, with `architectures` (when present) a list of strings."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} has no config.json; is it a Hugging Face checkpoint folder?")
    config = read_json_object(config_path)
    architectures = config.get("architectures")
    if architectures is not None and (
        not isinstance(architectures, list) or not all(isinstance(arch, str) for arch in architectures)
    ):
        raise CheckpointError(
            f"{config_path}: 'architectures' must be a list of class names, e.g. [\"{architectures}\"], "
            f"got {architectures!r}"
        )
    return config


def check_weight_files(folder: Path) -> None:
    """Refuse pickle-only folders (`.bin`/`.pt` could run code on load) and unreadable safetensors files."""
    weights = sorted(folder.glob("*.safetensors"))
    for index in sorted(folder.glob("*.safetensors.index.json")):
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no 'weight_map' object; the index file is damaged: download it again")
        missing = sorted({str(shard) for shard in weight_map.values()} - {path.name for path in weights})
        if missing:
            raise CheckpointError(
                f"{index} lists weight files that are not in {folder}: {missing[:4]}; the download is incomplete"
            )
    if weights:
        for path in weights:
            check_safetensors(path)
        return
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickles:
        raise CheckpointError(
            f"{folder} holds weights only as pickle files {pickles}; convert them to safetensors "
            "(transformers' `save_pretrained(safe_serialization=True)`) before loading"
        )
    raise CheckpointError(f"{folder} has no *.safetensors weight files")


def check_safetensors(path: Path) -> None:
    """Open the file's header (no tensor is read), so a truncated or corrupt file is named."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}); it is truncated or corrupt: download it again"
        ) from error


def check_remote_code(folder: Path, config: dict[str, Any], trust_remote_code: bool) -> None:
    """A checkpoint that ships its own modelling code loads only when the user says so."""
    if config.get("auto_map") and not trust_remote_code:
        raise CheckpointError(
            f"{folder}/config.json maps to custom code ({sorted(config['auto_map'])}); loading it would "
            "execute that code. Pass trust_remote_code=True if you trust the checkpoint."
        )
