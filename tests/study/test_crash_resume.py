"""Crash safety, for real: `tl-video flow` is killed with SIGKILL at random points and restarted with
`--resume` until it finishes; the record file then holds exactly the records of an uninterrupted run
(same keys, same values, no duplicates, no gaps, no torn line).

Kill points are drawn with a seeded generator: either once the record file has reached a random
number of lines (inside the sweep, or after the last record while figures and the report are
written) or after a random delay from the start (often while the process is still importing or
loading the model). Each trial's points and line counts are printed (``pytest -s``) for the record.
The slow variants kill more often, and kill `tl-video study --analyses flow,pathways,lens` (compared
file by file with an uninterrupted study).
"""

from __future__ import annotations

import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tl_video.analyses.flow import FlowOptions, run_flow
from tl_video.analyses.records import read_records
from tl_video.analyses.study_data import load_examples

PRESET = "vql-to-ql"
N_PER_TASK = 1  # the first example of each of the 5 tasks


FLOW = ("flow", "--presets", PRESET)
STUDY = ("study", "--analyses", "flow,pathways,lens", "--presets", f"cross-frame,{PRESET}")  # pathways reads both flows' curves


def _command(data: Path, out: Path, resume: bool, what: tuple[str, ...] = FLOW) -> list[str]:
    command = [sys.executable, "-m", "tl_video.cli", *what, "--data", str(data), "--n", str(N_PER_TASK),
               "--out", str(out), "--formats", "html", "--quiet", "--threads", "1"]
    return command + (["--resume"] if resume else [])


def _lines(out: Path) -> int:
    """Lines in every record file of the run folder."""
    return sum(path.read_bytes().count(b"\n") for path in out.glob("*.jsonl")) if out.is_dir() else 0


def _run_until(command: list[str], records: Path, point: tuple[str, float] | None, timeout: float = 300) -> tuple[int, int]:
    """Run ``command``; kill it (SIGKILL, whole process group) at ``point``. Returns (exit code, lines on disk)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    started = time.monotonic()
    while process.poll() is None:
        if time.monotonic() - started > timeout:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(f"{' '.join(command)} ran for more than {timeout} s")
        if point is not None:
            kind, value = point
            if (kind == "lines" and _lines(records) >= value) or (kind == "delay" and time.monotonic() - started >= value):
                os.killpg(process.pid, signal.SIGKILL)
                break
        time.sleep(0.005)
    code = process.wait()
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if code not in (0, -signal.SIGKILL):
        raise AssertionError(f"exit {code}: {error.strip()[-2000:]}")
    return code, _lines(records)


def _same(value, expected) -> bool:
    if isinstance(expected, float) and isinstance(value, (int, float)):
        return (math.isnan(expected) and math.isnan(value)) or math.isclose(value, expected, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(expected, dict):
        return isinstance(value, dict) and value.keys() == expected.keys() and all(_same(value[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return isinstance(value, list) and len(value) == len(expected) and all(map(_same, value, expected))
    return value == expected


@pytest.fixture(scope="module")
def reference(toy_model, study_benchmark_dir):
    """The uninterrupted run's records, by key (same examples and options as the command line)."""
    data = load_examples(study_benchmark_dir / "examples.jsonl", n=N_PER_TASK)
    result = run_flow(toy_model, data.examples, FlowOptions(presets=(PRESET,), dataset=data.name), progress=False)
    return {record["key"]: record for record in result.records}


def kill_and_resume(data: Path, out: Path, expected_lines: int, seed: int, n_kills: int, what: tuple[str, ...] = FLOW) -> list[str]:
    """Kill the run ``n_kills`` times at seeded random points, then resume to the end; returns what happened."""
    rng = random.Random(seed)
    records = out
    log = []
    for trial in range(n_kills + 1):
        point, before = None, _lines(records)
        if trial < n_kills:  # a delay (any phase, often start-up), or a line count still to come (or reached: figures)
            if before >= expected_lines or rng.random() < 0.25:
                point = ("delay", round(rng.uniform(0.5, 8.0), 2))
            else:
                point = ("lines", rng.randint(before + 1, expected_lines))
        code, after = _run_until(_command(data, out, resume=trial > 0, what=what), records, point)
        log.append(f"run {trial}: point={point} lines {before}->{after} {'killed' if code else 'finished'}")
        if code == 0:
            break
    else:
        code, after = _run_until(_command(data, out, resume=True, what=what), records, None)
        log.append(f"final run: lines -> {after} finished")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.append(f"CPU of all runs (children so far): {usage.ru_utime + usage.ru_stime:.0f} s")
    print("\n".join(log))
    return log


def check_equal(out: Path, reference: dict, name: str = "flow.jsonl") -> None:
    _, records = read_records(out / name)  # strict: a torn line anywhere is an error
    keys = [record["key"] for record in records]
    assert len(keys) == len(set(keys)), f"duplicated records: {sorted(k for k in keys if keys.count(k) > 1)[:5]}"
    assert set(keys) == set(reference), f"missing {sorted(set(reference) - set(keys))[:5]}, extra {sorted(set(keys) - set(reference))[:5]}"
    different = [key for key in keys if not _same(records[keys.index(key)], reference[key])]
    assert not different, f"{len(different)} records differ from the uninterrupted run, e.g. {different[0]}"
    assert (out / "report.html").is_file() and (out / "run.json").is_file()


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path, study_benchmark_dir, reference):
    log = kill_and_resume(study_benchmark_dir / "examples.jsonl", tmp_path / "run", len(reference) + 1, seed=13, n_kills=3)
    assert sum("killed" in line for line in log) >= 1
    check_equal(tmp_path / "run", reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_sigkills_then_resume_equals_an_uninterrupted_run(tmp_path, study_benchmark_dir, reference, seed):
    kill_and_resume(study_benchmark_dir / "examples.jsonl", tmp_path / "run", len(reference) + 1, seed=seed, n_kills=8)
    check_equal(tmp_path / "run", reference)


@pytest.mark.slow
def test_sigkills_during_a_study_of_three_analyses_then_resume_equal_an_uninterrupted_study(tmp_path, study_benchmark_dir):
    data = study_benchmark_dir / "examples.jsonl"
    code, total = _run_until(_command(data, tmp_path / "reference", False, STUDY), tmp_path / "reference", None)
    assert code == 0
    kill_and_resume(data, tmp_path / "run", total, seed=7, n_kills=6, what=STUDY)
    for path in sorted((tmp_path / "reference").glob("*.jsonl")):
        check_equal(tmp_path / "run", {r["key"]: r for r in read_records(path)[1]}, path.name)
