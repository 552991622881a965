"""Gradient knockout attribution over every flow x layer vs the exact sweep: speed ratio and Spearman rho.

The measurement itself lives in `benchmarks/attribution_vs_exact.py` (`bench_attribution`,
`bench_lines`), run here on the benchmark's own model and input. If that module is missing or
fails to import, this case prints one `PENDING` line and no BENCH line, so the run never claims a
result that was not measured.
"""

from __future__ import annotations

from typing import Any


def lines(bench: Any) -> list[str]:
    try:
        from benchmarks.attribution_vs_exact import bench_attribution, bench_lines
    except ImportError as error:
        return [f"PENDING attribution-vs-exact: benchmarks/attribution_vs_exact.py not usable here ({error})"]
    try:
        result = bench_attribution(bench.model, bench.prepared, repeats=1)
    except Exception as error:  # another module's failure must not cost the rest of the run
        return [f"ERROR attribution-vs-exact: {type(error).__name__}: {error}"]
    return bench_lines(result, where=f"random {bench.shape.name} model")
