"""Data-parallel studies: shard assignment, and 2 CPU processes under torchrun (gloo) against one process.

The merged record files of a sharded run must be the single-process files, byte for byte: the same
header, the same records in the same order, the same values.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tl_video.analyses.distributed import merge_shards, owners, shard_dir, shard_indices
from tl_video.analyses.records import read_records
from tl_video.cli import main
from tl_video.data.examples import VideoQAExample

ANALYSES = ("flow", "pathways", "lens")  # attention adds 10 s of figures: its merge rule is tested below


def _examples(ids: list[str]) -> list[VideoQAExample]:
    return [VideoQAExample(example_id=i, video="v.mp4", question="q?", options=("a", "b"), answer_index=0) for i in ids]


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
@pytest.mark.parametrize("n", [0, 1, 5, 12])
def test_every_example_goes_to_exactly_one_process_balanced(n, world_size):
    shards = [shard_indices(n, rank, world_size) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))  # each exactly once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    assert shards == [shard_indices(n, rank, world_size) for rank in range(world_size)]  # deterministic
    ids = [f"e{i}" for i in range(n)]
    assert owners(_examples(ids), world_size) == {f"e{i}": rank for rank, shard in enumerate(shards) for i in shard}


def test_shard_assignment_refuses_bad_ranks_and_duplicated_ids():
    with pytest.raises(ValueError, match="rank 2 of world size 2"):
        shard_indices(4, 2, 2)
    with pytest.raises(ValueError, match="example id 'a' appears twice"):
        owners(_examples(["a", "b", "a"]), 2)


def test_merge_refuses_a_record_of_another_process(tmp_path):
    from tl_video.analyses.records import RecordSink, RunHeader

    header = RunHeader(analysis="flow", model_id="m", model_config_hash="h", dataset="d", options={}, seed=0)
    examples = _examples(["a", "b"])
    for rank, example_id in ((0, "b"), (1, "a")):  # a -> process 0, b -> process 1: swapped on purpose
        sink = RecordSink.open(shard_dir(tmp_path, rank, 2) / "flow.jsonl", header)
        sink.append({"key": f"baseline/{example_id}", "kind": "baseline", "example_id": example_id})
    with pytest.raises(ValueError, match="not one of process 0's"):
        merge_shards(tmp_path, "flow", examples, 2)


def _study(out: Path, data: Path) -> list[str]:
    """The study command of both runs (the two presets pathways needs, to keep it short)."""
    return ["study", "--data", str(data), "--n", "1", "--presets", "cross-frame,vql-to-ql", "--analyses", ",".join(ANALYSES),
            "--formats", "html", "--quiet", "--out", str(out)]


def test_two_processes_under_torchrun_write_the_single_process_records(tmp_path, study_benchmark_dir, capsys):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main(_study(single, study_benchmark_dir)) == 0
    capsys.readouterr()
    # pathways resumes from half of a finished file (seeded into the shards); flow and lens start fresh
    header, records = read_records(single / "pathways.jsonl")
    sharded.mkdir()
    kept = [header.to_json(), *records[: len(records) // 2]]
    (sharded / "pathways.jsonl").write_text("".join(json.dumps(obj) + "\n" for obj in kept), encoding="utf-8")

    env = os.environ | {"OMP_NUM_THREADS": "1", "TL_VIDEO_DIST_TIMEOUT_S": "300"}
    # `--` ends torchrun's options: without it torchrun reads `--n` as an ambiguous abbreviation of its own
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "--", "tl_video.cli", *_study(sharded, study_benchmark_dir), "--resume"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    for name in ANALYSES:
        merged, alone = (folder / f"{name}.jsonl" for folder in (sharded, single))
        assert merged.read_bytes() == alone.read_bytes(), name  # header, records, order and values
        for rank in range(2):
            assert (shard_dir(sharded, rank, 2) / f"{name}.jsonl").is_file()
    info = json.loads((sharded / "run.json").read_text())
    assert info["distributed"]["world_size"] == 2 and info["distributed"]["backend"] == "gloo"
    assert info["analyses"]["pathways"]["n_resumed"] == len(records) // 2
    assert all(info["analyses"][name]["status"] == "done" for name in ANALYSES)
    assert (sharded / "report.html").is_file()
    assert done.stdout.count("wrote ") == 1  # the summary comes from process 0 only


def test_merge_keeps_what_one_process_keeps_of_the_cross_example_choices(tmp_path):
    """Each process draws a lens grid for its own first analysed example and attention token maps for
    its own first ones; the merge keeps the first grid and the maps of the first N examples overall."""
    from tl_video.analyses.records import RecordSink, RunHeader

    examples = _examples(["a", "b", "c", "d"])  # a, c -> process 0; b, d -> process 1
    for analysis, options in (("lens", {}), ("attention", {"token_map_examples": 2})):
        header = RunHeader(analysis=analysis, model_id="m", model_config_hash="h", dataset="d", options=options, seed=0)
        first = {}
        for example in examples:
            rank = owners(examples, 2)[example.example_id]
            path = shard_dir(tmp_path, rank, 2) / f"{analysis}.jsonl"
            sink = RecordSink.open(path, header, resume=path.exists())
            sink.append({"key": f"baseline/{example.example_id}", "kind": "baseline", "example_id": example.example_id,
                         "selected": example.example_id != "a"})  # a is not analysed
            if example.example_id == "a":
                continue
            index = first[rank] = first.get(rank, -1) + 1  # this process's analysed-example index
            if analysis == "lens" and index == 0:
                sink.append({"key": f"grid/{example.example_id}", "kind": "grid", "example_id": example.example_id})
            if analysis == "attention":
                maps = [[1.0]] if index < 2 else None
                sink.append({"key": f"attention/{example.example_id}", "kind": "attention", "example_id": example.example_id,
                             "query_tokens": maps and ["x"], "token_maps": maps, "token_video_mass": maps})
        _, merged = read_records(merge_shards(tmp_path, analysis, examples, 2))
        if analysis == "lens":
            assert [r["example_id"] for r in merged if r["kind"] == "grid"] == ["b"]
        else:
            assert [r["example_id"] for r in merged if r["kind"] == "attention" and r["token_maps"]] == ["b", "c"]
            assert [r["token_maps"] for r in merged if r["example_id"] == "d" and r["kind"] == "attention"] == [None]


def test_resuming_with_another_process_count_is_refused(tmp_path):
    from tl_video.analyses.distributed import _check_other_shards

    path = shard_dir(tmp_path, 0, 3) / "flow.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"type": "header"}\n')
    with pytest.raises(ValueError, match="run with 3 processes, this one has 2; resume with --nproc_per_node 3"):
        _check_other_shards(tmp_path, "flow.jsonl", 2)
    shutil.rmtree(tmp_path / "shards")
    _check_other_shards(tmp_path, "flow.jsonl", 2)


def test_a_shard_resumes_where_it_stopped_and_the_merge_is_unchanged(tmp_path, toy_model, study_examples):
    """Both shards run in this process (`sharded`), one is cut mid-line and resumed; the merge is the single run's file."""
    from tl_video.analyses.distributed import sharded
    from tl_video.analyses.flow import FlowOptions, run_flow

    examples = study_examples[:5]
    options = FlowOptions(presets=("vql-to-ql",), dataset="tiny")
    run_flow(toy_model, examples, options, out_dir=tmp_path / "single", progress=False)
    for rank in range(2):
        with sharded(examples, rank, 2):
            run_flow(toy_model, examples, options, out_dir=shard_dir(tmp_path / "sharded", rank, 2), progress=False)
    path = shard_dir(tmp_path / "sharded", 1, 2) / "flow.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:20], encoding="utf-8")  # a torn write
    with sharded(examples, 1, 2):
        resumed = run_flow(toy_model, examples, options, out_dir=path.parent, resume=True, progress=False)
    assert len(resumed.records) == len(lines) - 1
    merged = merge_shards(tmp_path / "sharded", "flow", examples, 2)
    assert merged.read_bytes() == (tmp_path / "single" / "flow.jsonl").read_bytes()
