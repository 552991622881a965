"""Turn the output of `benchmarks/run.py` into the README's markdown table.

    python benchmarks/run.py | tee bench.txt && python benchmarks/table.py < bench.txt
"""

from __future__ import annotations

import re
import sys

BENCH = re.compile(r"^BENCH (\S+) measured=(\S+) target=(\S+) (PASS|FAIL)$")
WORK = re.compile(r"^WORK (\S+) done=(\d+) minimum=(\d+) ratio=(\S+) clean=(\d+)$")


def markdown(lines: list[str]) -> str:
    rows = ["| benchmark | measured | target | result |", "|---|---|---|---|"]
    rows += [f"| {m[1]} | {float(m[2]):.2f} | {m[3]} | {m[4]} |" for m in map(BENCH.match, lines) if m]
    work = [m for m in map(WORK.match, lines) if m]
    if work:
        rows += ["", "| sweep | positions x layers recomputed | minimum | ratio | clean pass |", "|---|---|---|---|---|"]
        rows += [f"| {m[1]} | {int(m[2]):,} | {int(m[3]):,} | {float(m[4]):.3f} | {int(m[5]):,} |" for m in work]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown(sys.stdin.read().splitlines()))
