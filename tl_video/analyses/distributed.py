"""Data-parallel studies on torch.distributed: each process analyses its shard, process 0 merges.

Launched by ``torchrun`` (the environment holds ``RANK`` and ``WORLD_SIZE``), `init` joins the
process group (nccl on CUDA, gloo on CPU) and picks this process's device: ``cuda:<LOCAL_RANK>``
when CUDA is available, else the CPU. A plain run never initialises anything and stays one process.

Sharding: example ``i`` of the study (dataset order, after the task and ``n`` selection) goes to
process ``i % world_size`` (`shard_indices`). Every process receives the whole example list and
skips the examples it does not own inside `scored_examples` (`owns`), so what a pipeline derives
from the whole list (a keyword set, a validated ``grid_example``) is the same as in one process.
Each process writes its records into ``<out>/shards/rank<r>-of-<w>/<analysis>.jsonl`` (resumed
per process with ``--resume``); after every pipeline the processes meet, process 0 merges the
shards into ``<out>/<analysis>.jsonl`` (`merge_shards`: the examples in dataset order, each one's
records in the order they were written) and every process reads the merged result back, so a
later pipeline (pathways, from the flow curves) sees all examples. Figures, ``run.json`` and the
report are written by process 0 only.

The merged file equals a single-process run's: the same header and the same records in the same
order, with the same values (each example is computed the same way, alone). Two pipeline choices
that depend on other examples are settled at the merge: the logit lens's per-frame grid belongs
to the first analysed example (each process draws one for its own first; the first in dataset
order is kept) and the attention token maps belong to the first ``token_map_examples`` analysed
examples (each process records them for its own first ones, a superset; the others are cleared).

    $ torchrun --nproc_per_node 4 -m -- tl_video.cli study --model ID --data DIR --out run   # docs/distributed.md
"""

from __future__ import annotations

import contextvars
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from tl_video.analyses.records import RunHeader, read_records, write_records_atomically
from tl_video.data.examples import VideoQAExample

SHARD_FOLDER = "shards"
TIMEOUT_ENV = "TL_VIDEO_DIST_TIMEOUT_S"  # how long a process waits for the others at a meeting point
DEFAULT_TIMEOUT_S = 24 * 3600  # shards can differ by hours of work (which examples are answered correctly)
T = TypeVar("T")

_OWNED: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("tl_video_owned_examples", default=None)
_GROUP: "Group | None" = None
_CREATED_PROCESS_GROUP = False  # whether `init` (not the caller) created torch's process group


class ShardFailed(RuntimeError):
    """A pipeline failed in at least one process; nothing was merged."""


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def shard_indices(n_examples: int, rank: int, world_size: int) -> list[int]:
    """The example indices process ``rank`` of ``world_size`` analyses: ``i`` with ``i % world_size == rank``.

    Every example goes to exactly one process, deterministically, and the shards differ in size by at most one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size}: need 0 <= rank < world_size")
    return list(range(rank, n_examples, world_size))


def owners(examples: Sequence[VideoQAExample], world_size: int) -> dict[str, int]:
    """Example id -> the process that analyses it; duplicated ids are refused (their records would collide)."""
    out: dict[str, int] = {}
    for index, example in enumerate(examples):
        if example.example_id in out:
            raise ValueError(f"example id {example.example_id!r} appears twice in the data; every example needs its own id")
        out[example.example_id] = index % world_size
    return out


@contextmanager
def sharded(examples: Sequence[VideoQAExample], rank: int, world_size: int) -> Iterator[frozenset[str]]:
    """Inside, `owns` is true only for the examples of shard ``rank`` (the pipelines skip the others)."""
    mine = frozenset(example_id for example_id, owner in owners(examples, world_size).items() if owner == rank)
    token = _OWNED.set(mine)
    try:
        yield mine
    finally:
        _OWNED.reset(token)


def owns(example: VideoQAExample) -> bool:
    """Whether this process analyses ``example`` (always, outside `sharded`)."""
    mine = _OWNED.get()
    return mine is None or example.example_id in mine


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel study: rank, world size, device and backend."""

    rank: int
    world_size: int
    local_rank: int
    device: str  # "cuda:<local_rank>" or "cpu"
    backend: str  # "nccl" or "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard_dir(self, out_dir: str | Path) -> Path:
        return shard_dir(out_dir, self.rank, self.world_size)

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def from_main(self, make: Callable[[], T]) -> T:
        """``make()`` run by process 0 alone and its value handed to every process (e.g. data rendered once)."""
        import torch.distributed as dist

        value, error = None, None
        if self.is_main:
            try:
                value = make()
            except Exception as caught:  # noqa: BLE001 - re-raised below, after the others were told
                error = caught
        box = [(value, None if error is None else f"{type(error).__name__}: {error}")]
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        value, message = box[0]
        if message is not None:
            raise ShardFailed(f"process 0 failed ({message})")
        return value

    def describe(self) -> dict[str, Any]:
        """What run.json records about the processes."""
        return {"world_size": self.world_size, "backend": self.backend, "shards": f"{SHARD_FOLDER}/rank<r>-of-{self.world_size}",
                "assignment": "example i -> process i % world_size", "device_of_process_0": self.device}


def shard_dir(out_dir: str | Path, rank: int, world_size: int) -> Path:
    return Path(out_dir) / SHARD_FOLDER / f"rank{rank}-of-{world_size}"


def init(device: str | None = None) -> Group | None:
    """Join the process group when launched by torchrun (None otherwise) and choose this process's device.

    ``device``: None or "cuda" -> ``cuda:<LOCAL_RANK>`` when CUDA is available (None: else the CPU);
    "cpu" -> the CPU. A numbered device is refused: each process takes the GPU of its local rank.
    """
    global _GROUP, _CREATED_PROCESS_GROUP
    if not launched():
        return None
    if _GROUP is not None:
        return _GROUP
    import torch
    import torch.distributed as dist

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"--device {device} under torchrun: each process uses cuda:LOCAL_RANK; pass --device cuda, cpu or nothing")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    use_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    chosen, backend = (f"cuda:{local_rank}", "nccl") if use_cuda else ("cpu", "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend=backend, timeout=timeout)
        _GROUP = Group(rank, world_size, local_rank, chosen, backend)
        _CREATED_PROCESS_GROUP = True
    else:
        _GROUP = Group(dist.get_rank(), dist.get_world_size(), local_rank, chosen, dist.get_backend())
    return _GROUP


def current() -> Group | None:
    """The group `init` joined, or None on a plain run (then `run_study` runs every example itself)."""
    return _GROUP


def teardown() -> None:
    """Leave the process group `init` created (one made by the caller is left to the caller)."""
    global _GROUP, _CREATED_PROCESS_GROUP
    if _CREATED_PROCESS_GROUP:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _CREATED_PROCESS_GROUP = False
    _GROUP = None


@contextmanager
def main_first(group: Group | None) -> Iterator[None]:
    """Process 0 runs the body first, the others after it finished (e.g. files the others then read)."""
    if group is not None and not group.is_main:
        group.barrier()
    try:
        yield
    finally:
        if group is not None and group.is_main:
            group.barrier()


# ----------------------------------------------------------------------------- one pipeline


def run_pipeline(
    group: Group, pipeline: Any, model: Any, examples: Sequence[VideoQAExample], options: Any, *,
    out_dir: str | Path, resume: bool, progress: bool, **inputs: Any,
) -> tuple[Any, int]:
    """Run ``pipeline`` on this process's shard, merge on process 0, and read the merged result back.

    Returns (merged result, records resumed over all processes). A failure in any process raises
    `ShardFailed` in every process, naming the process(es) and their error.
    """
    out_dir = Path(out_dir)
    name = f"{pipeline.record_name}.jsonl"
    mine = group.shard_dir(out_dir)
    error, n_resumed = None, 0
    try:
        _check_other_shards(out_dir, name, group.world_size)
        if resume:
            seed_from_merged(out_dir / name, mine / name, examples, group.rank, group.world_size)
            n_resumed = _count_records(mine / name)
        with sharded(examples, group.rank, group.world_size):
            pipeline.run(model, examples, options, out_dir=mine, resume=resume, progress=progress, **inputs)
    except Exception as caught:  # noqa: BLE001 - every process must learn of it before anyone merges
        error = f"{type(caught).__name__}: {' '.join(str(caught).split())}"
    reports = group.gather((error, n_resumed))
    failed = [f"process {rank}: {message}" for rank, (message, _) in enumerate(reports) if message]
    if failed:
        raise ShardFailed("; ".join(failed))
    problem = None
    if group.is_main:
        try:
            merge_shards(out_dir, pipeline.record_name, examples, group.world_size)
        except Exception as caught:  # noqa: BLE001 - told to every process below
            problem = f"{type(caught).__name__}: {' '.join(str(caught).split())}"
    problem = group.gather(problem)[0]
    if problem:
        raise ShardFailed(f"merging the {pipeline.record_name} shards failed ({problem})")
    return pipeline.read(out_dir), sum(count for _, count in reports)


def _check_other_shards(out_dir: Path, name: str, world_size: int) -> None:
    """Refuse shards of another process count: their examples would be split differently."""
    for path in sorted((out_dir / SHARD_FOLDER).glob(f"rank*-of-*/{name}")):
        theirs = path.parent.name.rpartition("-of-")[2]
        if theirs != str(world_size) and path.stat().st_size > 0:
            raise ValueError(
                f"{path} was written by a run with {theirs} processes, this one has {world_size}; resume with "
                f"--nproc_per_node {theirs}, or delete {out_dir / SHARD_FOLDER} to start the shards from the merged records"
            )


def _count_records(path: Path) -> int:
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    try:
        return len(read_records(path, drop_torn_tail=True)[1])
    except ValueError:  # torn inside: the pipeline reports it
        return 0


def seed_from_merged(merged: Path, shard: Path, examples: Sequence[VideoQAExample], rank: int, world_size: int) -> bool:
    """Start a missing shard file from a merged record file (a finished or single-process run being resumed).

    The shard gets the merged header and the records of its own examples, in order. Returns whether it wrote one.
    """
    if shard.exists() or not merged.is_file() or merged.stat().st_size == 0:
        return False
    header, records = read_records(merged, drop_torn_tail=True)  # a single-process run may have been cut mid-line
    owner = owners(examples, world_size)
    kept = [record for record in records if owner.get(record.get("example_id")) == rank]
    write_records_atomically(shard, header, kept)
    return True


# ----------------------------------------------------------------------------- merging


def merge_shards(out_dir: str | Path, record_name: str, examples: Sequence[VideoQAExample], world_size: int) -> Path:
    """Write ``<out_dir>/<record_name>.jsonl`` from the shards: the single-process file of the same run.

    Checks that every shard has the same header and only its own examples' records.
    """
    out_dir = Path(out_dir)
    owner = owners(examples, world_size)
    header: RunHeader | None = None
    by_example: dict[str, list[dict[str, Any]]] = {}
    for rank in range(world_size):
        path = shard_dir(out_dir, rank, world_size) / f"{record_name}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; did process {rank} run {record_name}?")
        theirs, records = read_records(path)
        if header is None:
            header = theirs
        elif theirs.to_json() != header.to_json():
            raise ValueError(f"{path}: its header differs from process 0's ({header.mismatch(theirs) or 'informative fields'})")
        for record in records:
            example_id = record.get("example_id")
            if owner.get(example_id) != rank:
                raise ValueError(f"{path}: record {record.get('key')!r} is for example {example_id!r}, not one of process {rank}'s")
            by_example.setdefault(example_id, []).append(record)
    merged = [record for example in examples for record in by_example.get(example.example_id, [])]
    merged = _settle_cross_example_choices(header, merged)
    target = out_dir / f"{record_name}.jsonl"
    write_records_atomically(target, header, merged)
    return target


def _settle_cross_example_choices(header: RunHeader, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep what one process keeps: the first lens grid, the attention token maps of the first N analysed examples."""
    if any(record.get("kind") == "grid" for record in records):
        first = next(i for i, record in enumerate(records) if record.get("kind") == "grid")
        records = [record for i, record in enumerate(records) if record.get("kind") != "grid" or i == first]
    n_maps = header.options.get("token_map_examples") if header.analysis == "attention" else None
    if isinstance(n_maps, int):
        analysed = [r["example_id"] for r in records if r.get("kind") == "baseline" and r.get("selected")]
        keep = set(analysed[:n_maps])
        records = [
            record | {"query_tokens": None, "token_maps": None, "token_video_mass": None}
            if record.get("kind") == "attention" and record["example_id"] not in keep else record
            for record in records
        ]
    return records


