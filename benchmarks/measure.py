"""Timing (interleaved repeats, median) and peak memory (one subprocess per case)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_medians(calls: dict[str, Callable[[], Any]], repeats: int, device: str = "cpu") -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds per call, each warmed up once, then run in rounds A, B, A, B, ... so slow
    phases of a shared machine hit every call alike. Also returns each call's last output."""
    outputs = {name: fn() for name, fn in calls.items()}  # warm-up
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


def peak_memory_bytes(device: str) -> int:
    """Peak since `reset_peak_memory`: torch.cuda.max_memory_allocated, or the process's peak RSS (VmHWM)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM line in /proc/self/status: peak RSS needs Linux")
