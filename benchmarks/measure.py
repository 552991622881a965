"""Timing (interleaved repeats, median) and peak memory (one subprocess per case)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_medians(
    calls: dict[str, Callable[[], Any]], repeats: int, device: str = "cpu",
    warmups: dict[str, Callable[[], Any]] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds per call, each warmed up once (by its entry in `warmups`, a cheaper call on the
    same code path, or else by itself), then run in rounds A, B, A, B, ... so slow phases of a shared
    machine hit every call alike. Also returns each call's last output."""
    warmups = warmups or {}
    outputs = {name: warmups.get(name, fn)() for name, fn in calls.items()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            synchronize(device)
            start = time.perf_counter()
            outputs[name] = fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}, outputs


def reset_peak_memory(device: str) -> None:
    """Start a fresh peak: the CUDA allocator's statistics, or Linux's VmHWM (via /proc/self/clear_refs)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def current_memory_bytes(device: str) -> int:
    """Memory in use now: torch.cuda.memory_allocated, or the process's resident set (VmRSS)."""
    if device.startswith("cuda"):
        return int(torch.cuda.memory_allocated())
    return _status_bytes("VmRSS:")


def peak_memory_bytes(device: str) -> int:
    """Peak since `reset_peak_memory`: torch.cuda.max_memory_allocated, or the process's peak RSS (VmHWM)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return _status_bytes("VmHWM:")


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} line in /proc/self/status: peak RSS needs Linux")
