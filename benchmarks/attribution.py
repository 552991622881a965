"""Gradient knockout attribution vs the exact sweep: speed ratio and Spearman rho.

HOOK for `benchmarks/attribution_vs_exact.py` (written separately). Until that script exists this
case prints one `PENDING` line and no BENCH line, so the run's BENCH lines never claim a result
that was not measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("attribution_vs_exact.py")


def lines(bench: Any) -> list[str]:
    if not SCRIPT.exists():
        return [f"PENDING attribution-vs-exact: {SCRIPT.name} is not in this checkout"]
    return [f"PENDING attribution-vs-exact: {SCRIPT.name} exists but is not wired in yet"]
