"""Merge a PEFT LoRA adapter into a language model's weights: W += (alpha / r) B A.

Fine-tuned VideoLLMs (e.g. PLLaVA "Video-FT" checkpoints, r 128 on `q_proj`/`v_proj`) may ship as
a LoRA adapter over a base checkpoint. `from_pretrained(base, lora_adapter=folder)` merges it into
the HF language model before conversion, so our backbone (and the HF model kept for parity) carry
the fine-tuned weights. No `peft` dependency: the format is read directly.

Adapter folder (PEFT format):
- `adapter_config.json`: `r`, `lora_alpha`, `target_modules` (names or one regex), optionally
  `use_rslora` (scale alpha / sqrt(r)), `rank_pattern` / `alpha_pattern` (per-module overrides,
  PEFT's suffix-regex matching);
- `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight` `[r, in]` and
  `...lora_B.weight` `[out, r]`, `<module>` named as in the model PEFT wrapped (transformers 4.x
  `language_model.model.layers...`, 5.x `model.language_model.layers...`, or a bare LM's
  `model.layers...`).

`from_pretrained(..., lora_alpha=)` (scaling alpha / r) or `lora_scaling=` replace the adapter
config's scaling; LoRA stored PEFT-wrapped inside a checkpoint is merged by
`tl_video.loading.published_pllava` with the same `merged_weight`.

Anything that cannot be merged exactly (DoRA, `fan_in_fan_out`, trained biases or
`modules_to_save` weights, modules outside the language model, unknown modules, wrong shapes)
raises a `CheckpointError` naming it, never a partial merge.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from jaxtyping import Float
from torch import nn

from tl_video.loading.checkpoint import CheckpointError, check_safetensors, read_json_object

# Prefixes that lead from the model PEFT wrapped to the language model (decoder) it contains.
_LANGUAGE_MODEL_PREFIXES = ("language_model.model.", "model.language_model.", "language_model.", "model.", "")
# `...lora_A.weight` as PEFT saves an adapter; `...lora_A.default.weight` (the adapter's name kept) as a
# PEFT-wrapped model's full state dict holds it.
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$"
)


@dataclass(frozen=True)
class LoraConfig:
    r: int
    lora_alpha: float
    target_modules: list[str] | str | None
    use_rslora: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    def scale(self, module: str) -> tuple[int, float]:
        """(rank, scaling) of one module, after PEFT's per-module patterns."""
        rank = _pattern_value(self.rank_pattern, module, self.r)
        alpha = _pattern_value(self.alpha_pattern, module, self.lora_alpha)
        return rank, alpha / (math.sqrt(rank) if self.use_rslora else rank)


@dataclass(frozen=True)
class LoraScaling:
    """Where the scaling of each module's B A comes from: an argument, else an adapter_config.json.

    `lora_scaling` is the factor itself; `lora_alpha` gives alpha / r with r read from the module's
    lora_A (PLLaVA's scripts pass `lora_alpha` on the command line, r 128).
    """

    config: LoraConfig | None = None
    lora_alpha: float | None = None
    lora_scaling: float | None = None

    def scale(self, module: str, rank: int) -> float:
        if self.lora_scaling is not None:
            return float(self.lora_scaling)
        if self.lora_alpha is not None:
            return float(self.lora_alpha) / rank
        if self.config is None:
            raise CheckpointError(f"no LoRA scaling for {module!r}: pass lora_alpha= or lora_scaling=")
        return self.config.scale(module)[1]


@torch.no_grad()
def merged_weight(
    weight: Float[torch.Tensor, "d_out d_in"], a: Float[torch.Tensor, "rank d_in"], b: Float[torch.Tensor, "d_out rank"], scale: float
) -> Float[torch.Tensor, "d_out d_in"]:
    """W + scale * B A computed in float32, returned in W's dtype (PEFT's merge, without peft)."""
    delta = (b.to(torch.float32) @ a.to(torch.float32)) * scale
    return (weight.to(torch.float32) + delta.to(weight.device)).to(weight.dtype)


def read_lora_config(folder: Path) -> LoraConfig:
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no adapter_config.json; is it a PEFT LoRA adapter folder?")
    raw: dict[str, Any] = read_json_object(path)
    if raw.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path}: peft_type {raw['peft_type']!r} is not a LoRA adapter")
    unsupported = {
        "use_dora": "DoRA magnitudes are not a plain low-rank update",
        "fan_in_fan_out": "transposed (Conv1D) base weights do not occur in these language models",
    }
    for key, why in unsupported.items():
        if raw.get(key):
            raise CheckpointError(f"{path}: {key}=true is not supported ({why})")
    if raw.get("modules_to_save"):
        raise CheckpointError(
            f"{path}: modules_to_save {raw['modules_to_save']} ship fully trained modules that tl_video does not "
            "merge; merge the adapter with peft (merge_and_unload) and save the result instead"
        )
    if raw.get("bias", "none") != "none":
        raise CheckpointError(f"{path}: bias={raw['bias']!r} trains biases, which tl_video does not merge")
    for key in ("r", "lora_alpha"):
        if not isinstance(raw.get(key), (int, float)) or raw[key] <= 0:
            raise CheckpointError(f"{path}: {key} must be a positive number, got {raw.get(key)!r}")
    return LoraConfig(
        r=int(raw["r"]),
        lora_alpha=float(raw["lora_alpha"]),
        target_modules=raw.get("target_modules"),
        use_rslora=bool(raw.get("use_rslora", False)),
        rank_pattern=dict(raw.get("rank_pattern") or {}),
        alpha_pattern=dict(raw.get("alpha_pattern") or {}),
    )


def read_lora_weights(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{module path as saved: {"A": [r, in], "B": [out, r]}} from adapter_model.safetensors."""
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        pickles = sorted(p.name for p in folder.glob("adapter_model*.bin"))
        hint = f" (found only the pickle {pickles}; convert it to safetensors)" if pickles else ""
        raise CheckpointError(f"{folder} has no adapter_model.safetensors{hint}")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    other: list[str] = []
    check_safetensors(path)
    for key, tensor in load_file(path).items():
        match = _LORA_KEY.match(key)
        if match is None:
            other.append(key)
        else:
            pairs.setdefault(match["module"], {})[match["which"]] = tensor
    if other:
        raise CheckpointError(
            f"{path} holds weights that are not LoRA A/B matrices, e.g. {sorted(other)[:5]} (embedding LoRA, "
            "trained biases or saved modules); tl_video merges lora_A/lora_B of linear layers only"
        )
    incomplete = sorted(module for module, pair in pairs.items() if set(pair) != {"A", "B"})
    if incomplete:
        raise CheckpointError(f"{path}: modules without both lora_A and lora_B: {incomplete[:5]}")
    if not pairs:
        raise CheckpointError(f"{path} holds no LoRA weights")
    return pairs


def merge_lora_adapter(
    language_model: nn.Module, folder: str | Path, *, lora_alpha: float | None = None, lora_scaling: float | None = None
) -> list[str]:
    """Merge the adapter in `folder` into `language_model` in place; returns the merged module names.

    Every module is checked (it exists in the language model, is linear, shapes and rank agree)
    before any weight changes. `lora_alpha` / `lora_scaling` replace the adapter config's scaling.
    """
    folder = Path(folder)
    config = read_lora_config(folder)
    scaling = LoraScaling(config, lora_alpha, lora_scaling)
    pairs = read_lora_weights(folder)
    modules = dict(language_model.named_modules())
    _check_target_modules(config, modules, folder)
    plan: list[tuple[str, nn.Linear, torch.Tensor, torch.Tensor, float]] = []
    unknown: list[str] = []
    for saved, pair in sorted(pairs.items()):
        name = _resolve(saved, modules)
        if name is None:
            unknown.append(saved)
            continue
        module = modules[name]
        if not isinstance(module, nn.Linear):
            raise CheckpointError(f"LoRA target {saved!r} is a {type(module).__name__}, not a linear layer")
        rank = config.scale(saved)[0]
        scale = scaling.scale(saved, rank)
        a, b = pair["A"], pair["B"]
        expected_a, expected_b = (rank, module.in_features), (module.out_features, rank)
        if tuple(a.shape) != expected_a or tuple(b.shape) != expected_b:
            raise CheckpointError(
                f"LoRA weights of {saved!r} have shapes A {tuple(a.shape)}, B {tuple(b.shape)}; the module "
                f"{name} ({module.in_features} -> {module.out_features}) with r={rank} needs A {expected_a}, B {expected_b}"
            )
        plan.append((name, module, a, b, scale))
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, nn.Linear)})
        raise CheckpointError(
            f"the LoRA adapter {folder} targets {len(unknown)} modules the language model does not have, e.g. "
            f"{unknown[:4]}; its linear layers are {', '.join(linear)} in {_count_layers(modules)} layers "
            "(is the adapter for another base model, or for the vision tower?)"
        )
    with torch.no_grad():
        for _, module, a, b, scale in plan:
            module.weight.copy_(merged_weight(module.weight, a, b, scale))
    return [name for name, *_ in plan]


def _resolve(saved: str, modules: dict[str, nn.Module]) -> str | None:
    for prefix in _LANGUAGE_MODEL_PREFIXES:
        if saved.startswith(prefix) and saved[len(prefix):] in modules:
            return saved[len(prefix):]
    return None


def _check_target_modules(config: LoraConfig, modules: dict[str, nn.Module], folder: Path) -> None:
    """Each named target must match some linear layer of the language model (PEFT's rule)."""
    targets = config.target_modules
    linear = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    if targets is None or targets == "all-linear":
        return
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, name) for name in linear):
            raise CheckpointError(f"{folder}: target_modules regex {targets!r} matches no linear layer of the language model")
        return
    leaves = {name.rsplit(".", 1)[-1] for name in linear}
    missing = [target for target in targets if target not in leaves and not any(name.endswith("." + target) for name in linear)]
    if missing:
        raise CheckpointError(
            f"{folder}: target_modules {missing} match no module of the language model; its linear layers are "
            f"{', '.join(sorted(leaves))}"
        )


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?{pattern}$", module):
            return value
    return default


def _count_layers(modules: dict[str, nn.Module]) -> int:
    return len({name.split(".")[1] for name in modules if name.startswith("layers.") and name.count(".") >= 1 and name.split(".")[1].isdigit()})
