"""Which examples a study analyses: a JSONL file, TVBench, TOMATO, or the built-in synthetic benchmark.

`load_examples` reads any of the supported formats from one path (a file or a dataset folder),
keeps the chosen tasks and the first ``n`` examples of each, and names the selection; the name
goes into every record file's header, so resuming with another selection is refused.
`synthetic_examples` renders the synthetic benchmark the default study runs on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tl_video.data.examples import VideoQAExample

FORMATS = ("jsonl", "tvbench", "tomato")


@dataclass(frozen=True)
class StudyData:
    """The examples of a study and the name its record files carry."""

    examples: tuple[VideoQAExample, ...]
    name: str  # e.g. "tvbench:/data/TVBench tasks=action_sequence n=20"
    source: str  # "jsonl", "tvbench", "tomato" or "synthetic"

    def counts(self) -> dict[str, int]:
        """Examples per task, in first-seen order."""
        return dict(Counter(example.task or "all" for example in self.examples))


def synthetic_examples(
    out_dir: str | Path, *, n_per_task: int, seed: int = 0, tasks: Sequence[str] | None = None, progress: bool = False
) -> StudyData:
    """Render the synthetic benchmark into ``out_dir`` (``videos/``, ``examples.jsonl``); same arguments, same files."""
    from tl_video.data.synthetic import TASKS, generate_benchmark

    if tasks:
        unknown = [task for task in tasks if task not in TASKS]
        if unknown:
            raise ValueError(f"--tasks {','.join(unknown)}: not a synthetic benchmark task; valid: {', '.join(TASKS)}")
    examples = generate_benchmark(out_dir, n_per_task=n_per_task, seed=seed, tasks=tasks or None, progress=progress)
    chosen = ",".join(tasks) if tasks else "all"
    return StudyData(examples, f"synthetic:seed={seed} tasks={chosen} n={n_per_task}", "synthetic")


def load_examples(
    data: str | Path, *, video_root: str | Path | None = None, tasks: Sequence[str] | None = None,
    n: int | None = None, data_format: str | None = None,
) -> StudyData:
    """Read ``data`` (format detected unless ``data_format`` is given), keep ``tasks`` and the first ``n`` per task.

    Accepted: a ``.jsonl`` file of VideoQA records (or a folder holding ``examples.jsonl``); a TVBench
    task file (``.json``, records with ``candidates``) or the TVBench folder (``json/<task>.json``,
    videos under ``video/<task>/`` unless ``video_root`` is given: the folder holding one subfolder
    per task); a TOMATO file (``.json``, records with ``demonstration_type``) or the TOMATO folder
    (``data/<type>.json``, videos under ``videos/`` unless ``video_root`` is given).
    """
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"--n {n!r}: give a positive number of examples per task")
    kind = data_format or _detect(path)
    if kind not in FORMATS:
        raise ValueError(f"--data format {kind!r} is not supported; valid: {', '.join(FORMATS)}")
    wanted = list(tasks) if tasks else None
    if kind == "jsonl":
        examples = _read_jsonl(path, video_root)
    elif kind == "tvbench":
        examples = _read_tvbench(path, video_root, wanted)
    else:
        examples = _read_tomato(path, video_root, wanted)
    examples = _select(examples, wanted, n, path)
    chosen = ",".join(wanted) if wanted else "all"
    return StudyData(tuple(examples), f"{kind}:{path.resolve()} tasks={chosen} n={n or 'all'}", kind)


def _detect(path: Path) -> str:
    if path.is_dir():
        if (path / "examples.jsonl").is_file():
            return "jsonl"
        if (path / "json").is_dir():
            return "tvbench"
        if (path / "data").is_dir() and (path / "videos").is_dir():
            return "tomato"
        raise ValueError(
            f"--data {path}: a folder with neither examples.jsonl, json/ (TVBench) nor data/ + videos/ (TOMATO); "
            "pass a .jsonl file, a TVBench or TOMATO .json file, or one of those folders"
        )
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix != ".json":
        raise ValueError(f"--data {path}: expected a .jsonl or .json file (or a dataset folder), got {path.suffix or 'no suffix'}")
    from tl_video.data.records import load_json_file

    content = load_json_file(path)  # a DatasetError naming the file: empty, not UTF-8 (byte, line), not JSON, a key twice
    first = next(iter(content.values() if isinstance(content, dict) else content), None) if content else None
    if isinstance(first, dict) and "candidates" in first:
        return "tvbench"
    if isinstance(first, dict) and "demonstration_type" in first:
        return "tomato"
    raise ValueError(
        f"--data {path}: neither TVBench (records with 'candidates') nor TOMATO (records with 'demonstration_type')"
    )


def _read_jsonl(path: Path, video_root: str | Path | None) -> list[VideoQAExample]:
    from tl_video.data import read_jsonl

    file = path / "examples.jsonl" if path.is_dir() else path
    return list(read_jsonl(file, video_root=video_root))


def _read_tvbench(path: Path, video_root: str | Path | None, tasks: list[str] | None) -> list[VideoQAExample]:
    from tl_video.data import TVBENCH_PAPER_TASKS, read_tvbench

    if path.is_file():
        if video_root is None:
            raise ValueError(f"--data {path}: a TVBench task file needs --video-root (that task's video folder)")
        return list(read_tvbench(path, video_root))
    files = {file.stem: file for file in sorted((path / "json").glob("*.json"))}
    names = tasks or [task for task in TVBENCH_PAPER_TASKS if task in files]
    missing = [task for task in names if task not in files]
    if missing or not names:
        raise ValueError(f"--tasks: no TVBench file json/{(missing or ['<task>'])[0]}.json in {path}; tasks there: {', '.join(files) or 'none'}")
    root = Path(video_root) if video_root is not None else path / "video"
    return [example for task in names for example in read_tvbench(files[task], root / task)]


def _read_tomato(path: Path, video_root: str | Path | None, tasks: list[str] | None) -> list[VideoQAExample]:
    from tl_video.data import read_tomato

    if path.is_file():
        if video_root is None:
            raise ValueError(f"--data {path}: a TOMATO file needs --video-root (the folder holding human/, object/, simulated/)")
        return list(read_tomato(path, video_root))
    files = {file.stem: file for file in sorted((path / "data").glob("*.json"))}
    names = tasks or list(files)
    missing = [task for task in names if task not in files]
    if missing or not names:
        raise ValueError(f"--tasks: no TOMATO file data/{(missing or ['<type>'])[0]}.json in {path}; types there: {', '.join(files) or 'none'}")
    root = Path(video_root) if video_root is not None else path / "videos"
    return [example for task in names for example in read_tomato(files[task], root)]


def _select(examples: list[VideoQAExample], tasks: list[str] | None, n: int | None, path: Path) -> list[VideoQAExample]:
    if tasks:
        present = list(dict.fromkeys(example.task for example in examples))
        unknown = [task for task in tasks if task not in present]
        if unknown:
            raise ValueError(f"--tasks {','.join(unknown)}: no such task in {path}; tasks there: {', '.join(map(str, present))}")
        examples = [example for example in examples if example.task in tasks]
    if n is not None:
        seen: Counter[str | None] = Counter()
        kept = []
        for example in examples:
            if seen[example.task] < n:
                kept.append(example)
                seen[example.task] += 1
        examples = kept
    if not examples:
        raise ValueError(f"--data {path}: no examples to analyse")
    return examples
