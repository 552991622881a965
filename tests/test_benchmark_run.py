"""benchmarks/run.py prints one parseable line per result (format only: no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = re.compile(r"^BENCH (?P<name>[a-z0-9-]+) measured=(?P<measured>[0-9.]+(e[-+]?[0-9]+)?) "
                   r"target=(?P<op>[<>])(?P<target>[0-9.]+) (?P<verdict>PASS|FAIL)$")
WORK = re.compile(r"^WORK (?P<sweep>[a-z0-9-]+) done=(\d+) minimum=(\d+) ratio=([0-9.]+) clean=(\d+)$")


def test_quick_run_prints_one_bench_line_per_case():
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    cases = ["plain-forward-vs-hf-sdpa", "question-and-options-to-last-sweep-vs-reference"]
    command = [sys.executable, str(script), "--shape", "tiny", "--repeats", "1", "--threads", "1"]
    for case in cases:
        command += ["--only", case]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    bench = [BENCH.match(line) for line in lines if line.startswith("BENCH ")]
    assert all(bench), [line for line in lines if line.startswith("BENCH ")]
    assert [match["name"] for match in bench] == cases
    for match in bench:
        measured, target = float(match["measured"]), float(match["target"])
        expected = measured > target if match["op"] == ">" else measured < target
        assert (match["verdict"] == "PASS") == expected
    work = [WORK.match(line) for line in lines if line.startswith("WORK ")]
    assert len(work) == 1 and work[0] and work[0]["sweep"] == "question-and-options-to-last"
    assert int(work[0][2]) >= int(work[0][3]) > 0  # done >= minimum
