"""The benchmark cases: each measures ratios in one process and returns its output lines.

Every result is one line `BENCH <name> measured=<number> target=<op><number> PASS|FAIL`; sweeps
add `WORK <sweep> done=<n> minimum=<m> ratio=<r> clean=<c>` (query positions x layers, see
`tl_video.analyses.sweep_engine.SweepWork`), `CHECK` lines (ours vs the reference method on the
timed configurations) and `INFO` lines (the seconds behind each ratio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from benchmarks.measure import interleaved_medians
from benchmarks.reference import ReferenceKnockout
from benchmarks.shapes import Shape
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.analyses.sweep_engine import sweep_work
from tl_video.interventions import blocked_edges_by_layer, knockout_hooks
from tl_video.interventions.knockout import KnockoutSpec, edge_counts
from tl_video.interventions.presets import effective_pathway_spec, preset
from tl_video.interventions.windows import window_layers

WINDOW_K = 9  # the paper's window (clipped to the model's depth on smaller shapes)


@dataclass
class Bench:
    """What every case reads: our model, the HF reference on the same input embeddings, the input."""

    model: Any
    reference: ReferenceKnockout
    prepared: Any
    shape: Shape
    device: str
    repeats: int


def bench_line(name: str, measured: float, op: str, target: float) -> str:
    passed = measured > target if op == ">" else measured < target
    return f"BENCH {name} measured={measured:.3f} target={op}{target:g} {'PASS' if passed else 'FAIL'}"


def sweep_specs(bench: Bench, preset_name: str) -> list[KnockoutSpec]:
    """The preset at every centre layer, window k = 9 (all of the model's layers covered)."""
    n_layers = bench.model.cfg.n_layers
    k = min(WINDOW_K, n_layers)
    return [spec for centre in range(n_layers)
            for spec in preset(preset_name, bench.prepared.layout, window_layers(centre, n_layers, k, "center"))]


def sweep_vs_reference(bench: Bench, preset_name: str, target: float) -> list[str]:
    """Our sweep (default engine, clean pass included) vs the reference method's time for the same
    configurations: its median seconds per configuration (timed on `repeats` configurations spread
    over the sweep, interleaved with our sweeps) times the number of configurations."""
    model, prepared, layout = bench.model, bench.prepared, bench.prepared.layout
    n_layers = model.cfg.n_layers
    specs = sweep_specs(bench, preset_name)
    sampled = sorted({round(i * (len(specs) - 1) / max(1, bench.repeats - 1)) for i in range(bench.repeats)})
    reference_rows: dict[int, torch.Tensor] = {}
    turn = iter(range(10**6))

    def reference_config() -> torch.Tensor:
        index = sampled[next(turn) % len(sampled)]
        reference_rows[index] = bench.reference.probabilities(blocked_edges_by_layer(specs[index], layout, n_layers))
        return reference_rows[index]

    seconds, outputs = interleaved_medians(
        {"ours": lambda: knockout_probabilities(model, prepared, specs), "reference": reference_config},
        bench.repeats, bench.device, warmups={"ours": lambda: knockout_probabilities(model, prepared, specs[-1:])},
    )
    ours = outputs["ours"]
    difference = max(float((ours[i] - row).abs().max()) for i, row in reference_rows.items())
    reference_sweep = seconds["reference"] * len(specs)
    work = sweep_work(specs, layout, n_layers)
    name = f"{preset_name}-sweep-vs-reference"
    return [
        f"INFO {name} configurations={len(specs)} ours_s={seconds['ours']:.3f} "
        f"reference_s_per_configuration={seconds['reference']:.3f} reference_sweep_s={reference_sweep:.2f}",
        f"CHECK {name} max_abs_probability_difference={difference:.1e} configurations_compared={len(reference_rows)}",
        f"WORK {preset_name} done={work.done} minimum={work.minimum} ratio={work.ratio:.3f} clean={work.clean}",
        bench_line(name, reference_sweep / seconds["ours"], ">", target),
    ]


def pathway_spec(bench: Bench) -> KnockoutSpec:
    """Effective pathways with edges blocked in every layer: cross-frame kept in the first third,
    Video→Question in the first two thirds (then all video↔video edges blocked), Question→Last in the
    second half; Video→Last and Last→Last blocked everywhere."""
    n = bench.model.cfg.n_layers
    return effective_pathway_spec(
        bench.prepared.layout, n, cross_frame=range(0, max(1, n // 3)),
        video_to_question=range(0, max(1, 2 * n // 3)), question_to_last=range(n // 2, n),
    )


def effective_pathway_forward(bench: Bench, target: float = 1.2) -> list[str]:
    model, tokens = bench.model, bench.prepared.tokens
    spec = pathway_spec(bench)
    hooks = knockout_hooks(spec, bench.prepared.layout, model.cfg.n_layers)

    def pathway() -> torch.Tensor:
        with model.hooks(fwd_hooks=hooks):
            return model(tokens)

    with torch.no_grad():
        seconds, _ = interleaved_medians({"unmasked": lambda: model(tokens), "pathway": pathway}, bench.repeats, bench.device)
    counts = edge_counts(spec, bench.prepared.layout, model.cfg.n_layers).suppressed_per_layer
    name = "effective-pathway-forward-vs-unmasked"
    return [
        f"INFO {name} pathway_s={seconds['pathway']:.3f} unmasked_s={seconds['unmasked']:.3f} blocked_edges={sum(counts)} layers_blocking={sum(c > 0 for c in counts)}/{len(counts)}",
        bench_line(name, seconds["pathway"] / seconds["unmasked"], "<", target),
    ]


def plain_forward_vs_hf_sdpa(bench: Bench, target: float = 1.1) -> list[str]:
    model, tokens = bench.model, bench.prepared.tokens
    with torch.no_grad():
        seconds, _ = interleaved_medians(
            {"ours": lambda: model(tokens), "hf-sdpa": lambda: bench.reference.forward("sdpa")}, bench.repeats, bench.device
        )
    name = "plain-forward-vs-hf-sdpa"
    return [
        f"INFO {name} ours_s={seconds['ours']:.3f} hf_sdpa_s={seconds['hf-sdpa']:.3f}",
        bench_line(name, seconds["ours"] / seconds["hf-sdpa"], "<", target),
    ]


def run_with_cache_vs_hf_eager(bench: Bench, target: float = 1.3) -> list[str]:
    model, tokens = bench.model, bench.prepared.tokens

    def cached() -> int:
        _, cache = model.run_with_cache(tokens)
        return len(cache)

    with torch.no_grad():
        seconds, outputs = interleaved_medians(
            {"ours": cached, "hf-eager": lambda: bench.reference.forward("eager")}, bench.repeats, bench.device
        )
    name = "run-with-cache-vs-hf-eager"
    return [
        f"INFO {name} ours_s={seconds['ours']:.3f} hf_eager_s={seconds['hf-eager']:.3f} hooks_cached={outputs['ours']}",
        bench_line(name, seconds["ours"] / seconds["hf-eager"], "<", target),
    ]


CASES: dict[str, Callable[[Bench], list[str]]] = {
    "plain-forward-vs-hf-sdpa": plain_forward_vs_hf_sdpa,
    "run-with-cache-vs-hf-eager": run_with_cache_vs_hf_eager,
    "effective-pathway-forward-vs-unmasked": effective_pathway_forward,
    "vql-to-ql-sweep-vs-reference": lambda bench: sweep_vs_reference(bench, "vql-to-ql", 20.0),
    "question-and-options-to-last-sweep-vs-reference": lambda bench: sweep_vs_reference(bench, "question-and-options-to-last", 20.0),
    "cross-frame-sweep-vs-reference": lambda bench: sweep_vs_reference(bench, "cross-frame", 1.5),
}
