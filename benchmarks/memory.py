"""Peak memory of a sweep vs one plain forward that fills a full key/value cache, each in its own process.

Each child loads the model and prepares the input, then resets the peak counter (Linux VmHWM via
/proc/self/clear_refs, or the CUDA allocator's statistics) and runs one case; the peak therefore
covers the case with the model's weights resident, not the loading. The sweep is the vql-to-ql
sweep at window 9 through the default (exact) engine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.measure import current_memory_bytes, peak_memory_bytes, reset_peak_memory
from benchmarks.shapes import Shape, load, prepare
from tl_video.model.kv_cache import KeyValueCache

CHILD_CASES = ("sweep", "cached-forward")
TARGET = 1.3


def child(case: str, checkpoint: Path, shape: Shape, dtype: torch.dtype, device: str) -> None:
    """Run one case after setup and print `PEAK <bytes>`."""
    from benchmarks.cases import Bench, sweep_specs
    from tl_video.analyses.sweep import knockout_probabilities

    model = load(checkpoint, dtype, device, keep_hf_model=False)
    prepared = prepare(model, shape)
    specs = sweep_specs(Bench(model, None, prepared, shape, device, 1), "vql-to-ql")
    with torch.no_grad():
        reset_peak_memory(device)
        base = current_memory_bytes(device)
        if case == "sweep":
            knockout_probabilities(model, prepared, specs)
        else:
            model(prepared.tokens, past_kv_cache=KeyValueCache.empty(model.cfg.n_layers))
    print(f"PEAK {peak_memory_bytes(device)} {base}", flush=True)


def measure(case: str, checkpoint: Path, args: argparse.Namespace, script: Path) -> tuple[int, int]:
    """(peak, in use when the case started) in bytes, from a child process running only this case."""
    command = [sys.executable, str(script), "--memory-child", case, "--checkpoint", str(checkpoint),
               "--device", args.device, "--dtype", args.dtype]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.shape or args.quick:
        command += ["--shape", args.shape or "quick"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    peaks = [line for line in done.stdout.splitlines() if line.startswith("PEAK ")]
    if done.returncode != 0 or not peaks:
        raise RuntimeError(f"memory case {case!r} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    _, peak, base = peaks[-1].split()
    return int(peak), int(base)


def compare(checkpoint: Path, args: argparse.Namespace, script: Path) -> list[str]:
    from benchmarks.cases import bench_line

    (sweep, sweep_base), (forward, forward_base) = (measure(case, checkpoint, args, script) for case in CHILD_CASES)
    kind = "cuda_max_memory_allocated" if args.device == "cuda" else "peak_rss"
    name = "sweep-peak-memory-vs-cached-forward"
    return [
        f"INFO {name} {kind}_sweep_mib={sweep / 2**20:.1f} {kind}_cached_forward_mib={forward / 2**20:.1f} "
        f"above_setup_sweep_mib={(sweep - sweep_base) / 2**20:.1f} above_setup_cached_forward_mib={(forward - forward_base) / 2**20:.1f}",
        bench_line(name, sweep / forward, "<", TARGET),
    ]
