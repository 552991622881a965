"""Where each part of a model lives when it is split layer-wise over several devices.

A 72B backbone does not fit one GPU. `DevicePlacement` says which device holds the token
embedding (and the video bank), each decoder block, the final norm + unembedding, and the front
end (vision tower + projector). It is plain data: `HookedVideoTransformer.place` moves each part
once, and the forward moves the residual stream to a block's device as it enters the block
(pipeline placement: one device computes at a time, no tensor parallelism).

`DevicePlacement.balanced` splits the blocks into contiguous runs so that no device holds more
parameter bytes than it must, counting the embedding with the first device and the unembedding
with the last (for a 152k vocabulary they weigh more than a decoder block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from tl_video.model.config import resolve_device

DeviceLike = str | torch.device


@dataclass(frozen=True)
class DevicePlacement:
    """The device of every part of a model; `blocks[l]` is decoder block l's."""

    embed: torch.device  # token embedding and the video bank: where input tokens go
    blocks: tuple[torch.device, ...]
    unembed: torch.device  # final norm and unembedding: where logits (and, by default, caches) land
    frontend: torch.device  # vision tower + projector: where `prepare` encodes videos

    def __post_init__(self) -> None:
        if not self.blocks:
            raise ValueError("a placement needs the device of at least one block")

    @classmethod
    def from_layer_counts(
        cls,
        devices: Sequence[DeviceLike],
        layers_per_device: Sequence[int],
        frontend_device: DeviceLike | None = None,
    ) -> "DevicePlacement":
        """The first `layers_per_device[0]` blocks (and the embedding) on `devices[0]`, the next on
        `devices[1]`, ... the unembedding on the last device; the front end on `frontend_device`
        (default: the first device)."""
        resolved = _devices(devices)
        counts = list(layers_per_device)
        if len(counts) != len(resolved):
            raise ValueError(
                f"layers_per_device has {len(counts)} entries for {len(resolved)} devices; give one count per device"
            )
        if any(isinstance(count, bool) or not isinstance(count, int) or count < 0 for count in counts):
            raise ValueError(f"layers_per_device must be non-negative integers, got {counts}")
        blocks = tuple(device for device, count in zip(resolved, counts) for _ in range(count))
        frontend = resolved[0] if frontend_device is None else _device(frontend_device, "frontend_device")
        return cls(resolved[0], blocks, resolved[-1], frontend)

    @classmethod
    def balanced(
        cls,
        devices: Sequence[DeviceLike],
        block_bytes: Sequence[int],
        embed_bytes: int,
        unembed_bytes: int,
        frontend_device: DeviceLike | None = None,
    ) -> "DevicePlacement":
        """Contiguous runs of blocks, one per device, with the smallest possible largest per-device
        parameter bytes (the embedding counts on the first device, the unembedding on the last)."""
        resolved = _devices(devices)
        if len(resolved) > len(block_bytes):
            raise ValueError(
                f"{len(resolved)} devices for a model with {len(block_bytes)} layers; give at most one device per layer"
            )
        counts = _balanced_counts(list(block_bytes), embed_bytes, unembed_bytes, len(resolved))
        return cls.from_layer_counts(resolved, counts, frontend_device)

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """Every device used, in the order the forward first reaches it (front end first)."""
        ordered = [self.frontend, self.embed, *self.blocks, self.unembed]
        return tuple(dict.fromkeys(ordered))

    @property
    def is_single_device(self) -> bool:
        return len(self.devices) == 1

    def describe(self) -> str:
        """One line, e.g. "front end on cuda:2; embedding and layers 0-39 on cuda:0; layers 40-79 and unembedding on cuda:1"."""
        runs: list[tuple[torch.device, int, int]] = []
        for layer, device in enumerate(self.blocks):
            if runs and runs[-1][0] == device:
                runs[-1] = (device, runs[-1][1], layer)
            else:
                runs.append((device, layer, layer))
        parts = [f"front end on {self.frontend}"]
        for index, (device, first, last) in enumerate(runs):
            what = f"layer {first}" if first == last else f"layers {first}-{last}"
            if index == 0 and device == self.embed:
                what = "embedding and " + what
            if index == len(runs) - 1 and device == self.unembed:
                what += " and unembedding"
            parts.append(f"{what} on {device}")
        if runs[0][0] != self.embed:
            parts.insert(1, f"embedding on {self.embed}")
        if runs[-1][0] != self.unembed:
            parts.append(f"unembedding on {self.unembed}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, object]:
        """What run.json records about the placement."""
        return {
            "frontend": str(self.frontend), "embed": str(self.embed), "unembed": str(self.unembed),
            "blocks": [str(device) for device in self.blocks],
        }


def _balanced_counts(block_bytes: list[int], embed_bytes: int, unembed_bytes: int, n_devices: int) -> list[int]:
    """Blocks per device (each at least one) minimising the largest device total: the linear
    partition problem, solved exactly by dynamic programming over (devices used, blocks placed)."""
    n_layers = len(block_bytes)
    prefix = [0]
    for size in block_bytes:
        prefix.append(prefix[-1] + size)

    def load(device: int, first: int, end: int) -> int:
        extra = (embed_bytes if device == 0 else 0) + (unembed_bytes if device == n_devices - 1 else 0)
        return prefix[end] - prefix[first] + extra

    infinity = float("inf")
    # best[d][i]: the least possible largest load with blocks 0..i-1 on devices 0..d-1; cut[d][i]: where device d-1 starts
    best = [[infinity] * (n_layers + 1) for _ in range(n_devices + 1)]
    cut = [[0] * (n_layers + 1) for _ in range(n_devices + 1)]
    best[0][0] = 0
    for device in range(1, n_devices + 1):
        for end in range(device, n_layers + 1):
            for first in range(device - 1, end):
                candidate = max(best[device - 1][first], load(device - 1, first, end))
                if candidate < best[device][end]:
                    best[device][end], cut[device][end] = candidate, first
    counts, end = [], n_layers
    for device in range(n_devices, 0, -1):
        first = cut[device][end]
        counts.append(end - first)
        end = first
    return counts[::-1]


def _device(device: DeviceLike, name: str) -> torch.device:
    resolved = resolve_device(device)
    if resolved is None:
        raise ValueError(f"{name} must be a device such as 'cuda:0' or 'cpu', got None")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def _devices(devices: Sequence[DeviceLike]) -> list[torch.device]:
    if isinstance(devices, (str, torch.device)) or not len(devices):
        raise ValueError(f"devices must be a non-empty list such as ['cuda:0', 'cuda:1'], got {devices!r}")
    resolved = [_device(device, "devices") for device in devices]
    repeated = sorted({str(device) for device in resolved if resolved.count(device) > 1})
    if repeated:
        raise ValueError(f"devices names {', '.join(repeated)} more than once; list each device once")
    return resolved


def plan_placement(
    model: torch.nn.Module,
    devices: Sequence[DeviceLike],
    frontend_device: DeviceLike | None = None,
    layers_per_device: Sequence[int] | None = None,
) -> DevicePlacement:
    """The placement `from_pretrained(devices=...)` uses: blocks balanced by parameter bytes over
    `devices` (or split by `layers_per_device`), the front end on `frontend_device` (default: the first)."""
    if layers_per_device is not None:
        return DevicePlacement.from_layer_counts(devices, layers_per_device, frontend_device)
    return DevicePlacement.balanced(
        devices,
        [_parameter_bytes(block) for block in model.blocks],
        _parameter_bytes(model.embed),
        _parameter_bytes(model.ln_final) + _parameter_bytes(model.unembed),
        frontend_device,
    )


def _parameter_bytes(module: torch.nn.Module) -> int:
    return sum(parameter.numel() * parameter.element_size() for parameter in module.parameters())
