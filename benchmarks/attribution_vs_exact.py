"""Gradient knockout attribution vs the exact sweep: speed ratio and rank agreement, in one process.

Every flow of the four paper presets (11 flows) is knocked out in every single layer. The exact
sweep (`knockout_probabilities`, the default exact engine) runs them all; the gradient screen
(`knockout_estimates`, one forward and one backward pass) estimates them all to first order. Printed:

    BENCH gradient-attribution-vs-exact-sweep measured=<exact s / screen s> target=>1 PASS|FAIL
    BENCH gradient-attribution-spearman measured=<rho> target=>0.5 PASS|FAIL

Targets, and why: the screen is worth running only if it is faster than the sweep it screens (> 1×;
one backward pass through materialised attention patterns costs a few forwards, the sweep one
partial forward per configuration). ρ > 0.5 asks for a ranking clearly better than chance but does
not claim the estimates replace the exact sweep: first-order estimates misrank knockouts whose
effect is large and nonlinear (docs/methods.md, "Gradient screening of knockouts"). The rank
correlation is Spearman's over every (flow, layer) cell that blocks an edge, of the estimated vs
the exact relative change of p(true letter); `top10_recall` is the share of the exact 10 largest
drops among the estimated 10 largest.

    python benchmarks/attribution_vs_exact.py                 # medium shape + the built-in model
    python benchmarks/attribution_vs_exact.py --shape quick   # smaller, for a busy machine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `tl_video` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from scipy.stats import spearmanr

from tl_video.analyses.flow import FlowOptions, blocked_edge_count
from tl_video.analyses.knockout_attribution import INVERSE_LINKS, flow_specs, knockout_attribution, knockout_estimates
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.prompts.answers import option_token_ids

ALL_PRESETS = ("cross-frame", "vql-to-ql", "question-and-options-to-last", "vq-to-true-opt")
SPEED_TARGET, SPEARMAN_TARGET = 1.0, 0.5


def bench_attribution(
    model: Any, prepared: Any, *, presets: Sequence[str] = ALL_PRESETS, token: int | None = None, repeats: int = 1,
) -> dict[str, Any]:
    """Time the screen and the exact sweep of every preset flow in every single layer of one input, and
    compare their numbers. `token`: whose probability (default: the true option's letter, else the argmax)."""
    n_layers = model.cfg.n_layers
    token = _token(model, prepared) if token is None else token
    options = FlowOptions(presets=tuple(presets))
    every_layer = flow_specs(prepared, options, range(n_layers))
    applies = [blocked_edge_count(spec, prepared.layout, n_layers)[0] is not None for _, spec in every_layer]
    flows = [spec for (_, spec), ok in zip(every_layer, applies) if ok]
    single = [spec for layer in range(n_layers)  # layer-major, flows in the same order
              for (_, spec), ok in zip(flow_specs(prepared, options, (layer,)), applies) if ok]
    with torch.no_grad():
        base = float(model(prepared.tokens.to(model.W_E.device))[0, -1].float().softmax(-1)[token])
    screen_s, exact_s, screen_cpu, exact_cpu = [], [], [], []
    for _ in range(repeats):  # interleaved, median kept: robust to other load on a shared machine
        start, cpu = time.perf_counter(), time.process_time()
        per_layer, clean = knockout_estimates(model, prepared, flows, token)  # [flow, layer]
        screen_s.append(time.perf_counter() - start)
        screen_cpu.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        probabilities = knockout_probabilities(model, prepared, single)[:, token].double().numpy()
        exact_s.append(time.perf_counter() - start)
        exact_cpu.append(time.process_time() - cpu)
    link = INVERSE_LINKS["log_odds"]
    estimated = ((link(clean + per_layer.numpy()) / link(clean) - 1.0) * 100.0).ravel()  # flow-major
    exact = ((probabilities - base) / base * 100.0).reshape(n_layers, len(flows)).T.ravel()
    cells = [(flow.label, layer) for flow in flows for layer in range(n_layers)]
    seconds_screen, seconds_exact = statistics.median(screen_s), statistics.median(exact_s)
    return {
        "speed_ratio": seconds_exact / seconds_screen, "spearman": float(spearmanr(estimated, exact).statistic),
        "top10_recall": _top_recall(estimated, exact, 10), "seconds_screen": seconds_screen,
        "seconds_exact": seconds_exact, "cpu_ratio": statistics.median(exact_cpu) / statistics.median(screen_cpu),
        "n_configurations": len(single), "n_layers": n_layers,
        "n_tokens": int(prepared.tokens.shape[1]), "cells": cells,
        "estimated": estimated, "exact": exact,
    }


def bench_lines(result: dict[str, Any], where: str = "") -> list[str]:
    """The BENCH lines of one `bench_attribution` result, and an INFO line with the seconds and shape."""
    suffix = f" ({where})" if where else ""
    return [
        _bench_line("gradient-attribution-vs-exact-sweep", result["speed_ratio"], ">", SPEED_TARGET),
        _bench_line("gradient-attribution-spearman", result["spearman"], ">", SPEARMAN_TARGET),
        f"INFO gradient-attribution{suffix}: screen {result['seconds_screen']:.2f} s vs exact sweep "
        f"{result['seconds_exact']:.2f} s wall (CPU-time ratio {result['cpu_ratio']:.2f}x) for {result['n_configurations']} "
        f"single-layer knockouts ({result['n_layers']} layers, {result['n_tokens']} tokens); "
        f"top-10 recall {result['top10_recall']:.1f}",
    ]


def largest_effects(result: dict[str, Any], n: int = 6) -> list[str]:
    """INFO lines: the cells with the largest exact effects, with their estimates and ranks (where it fails)."""
    exact, estimated = result["exact"], result["estimated"]
    rank = np.empty(len(estimated), dtype=int)
    rank[np.argsort(-np.abs(estimated))] = np.arange(1, len(estimated) + 1)
    return [f"INFO largest exact effect #{i + 1}: {result['cells'][cell][0]} at L{result['cells'][cell][1] + 1}: exact "
            f"{exact[cell]:+.2f}%, estimated {estimated[cell]:+.2f}% (rank {rank[cell]} of {len(estimated)} by |estimate|)"
            for i, cell in enumerate(np.argsort(-np.abs(exact))[:n])]


def bench_builtin(n_per_task: int = 2, seed: int = 0) -> dict[str, Any]:
    """The screen vs the exact sweep on the built-in model and its synthetic benchmark (examples answered
    correctly), all presets x all layers: Spearman of the means over examples and per example."""
    import tl_video
    from tl_video.data import generate_benchmark

    model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
    with tempfile.TemporaryDirectory() as folder:
        examples = generate_benchmark(folder, n_per_task=n_per_task, seed=seed)
        screen = knockout_attribution(model, examples, FlowOptions(presets=ALL_PRESETS), exact=True, progress=False)
    per_cell = _nanmean(screen.exact)
    estimated = screen.mean()
    finite = np.isfinite(per_cell) & np.isfinite(estimated)
    return {**screen.spearman(), "n_examples": len(screen.example_ids),
            "speed_ratio": screen.seconds["exact"] / screen.seconds["attribution"],
            "top10_recall": _top_recall(estimated[finite], per_cell[finite], 10)}


def _token(model: Any, prepared: Any) -> int:
    if prepared.layout.true_option is not None:
        return option_token_ids(model.tokenizer, prepared)[prepared.layout.true_option]
    with torch.no_grad():
        return int(model(prepared.tokens)[0, -1].argmax())


def _top_recall(estimated: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Share of the k most negative exact cells among the k most negative estimated cells."""
    k = min(k, len(exact))
    return len(set(np.argsort(estimated)[:k]) & set(np.argsort(exact)[:k])) / k if k else float("nan")


def _nanmean(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    return np.where(finite.any(0), np.where(finite, values, 0.0).sum(0) / np.maximum(finite.sum(0), 1), np.nan)


def _bench_line(name: str, measured: float, op: str, target: float) -> str:
    passed = measured > target if op == ">" else measured < target
    return f"BENCH {name} measured={measured:.3f} target={op}{target:g} {'PASS' if passed else 'FAIL'}"


def main(argv: list[str] | None = None) -> None:
    from benchmarks.shapes import SHAPES, load, prepare, save_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="medium")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats (median)")
    parser.add_argument("--builtin-n", type=int, default=2,
                        help="synthetic examples per task for the built-in model (0: skip)")
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as folder:
        model = load(save_checkpoint(shape, Path(folder) / "checkpoint"), torch.float32, "cpu", keep_hf_model=False)
        prepared = prepare(model, shape)
        model(prepared.tokens[:, :64])  # warm-up
        result = bench_attribution(model, prepared, repeats=args.repeats)
    print(f"INFO shape {shape.name}: {shape.layers} layers, d_model {shape.d_model}, {shape.frames} frames; "
          f"{torch.get_num_threads()} threads")
    for line in bench_lines(result, where=f"random {shape.name} model"):
        print(line, flush=True)
    for line in largest_effects(result):
        print(line, flush=True)
    if args.builtin_n:
        builtin = bench_builtin(args.builtin_n)
        print(f"INFO gradient-attribution on the built-in model ({builtin['n_examples']} examples answered correctly): "
              f"Spearman of the means {builtin['mean']:.3f}, median per example {builtin['per_example']:.3f}, "
              f"top-10 recall {builtin['top10_recall']:.1f}, speed ratio {builtin['speed_ratio']:.1f}x", flush=True)


if __name__ == "__main__":
    main()
