"""VideoQA data: the example record, dataset readers with per-record error reports, a synthetic benchmark.

Every reader returns a :class:`ReadResult` of :class:`VideoQAExample` records; bad records are
reported all at once (:class:`DatasetError`) or skipped with ``on_error="skip"``.
"""

from tl_video.data.examples import OPTION_LETTERS, InvalidExampleError, VideoQAExample
from tl_video.data.jsonl import read_jsonl, write_jsonl
from tl_video.data.problems import DatasetError, DatasetWarning, ReadResult, RecordProblem
from tl_video.data.tomato import read_tomato, tomato_video_candidates
from tl_video.data.tvbench import TVBENCH_PAPER_TASKS, read_tvbench

__all__ = [
    "VideoQAExample",
    "InvalidExampleError",
    "OPTION_LETTERS",
    "ReadResult",
    "RecordProblem",
    "DatasetError",
    "DatasetWarning",
    "read_tvbench",
    "TVBENCH_PAPER_TASKS",
    "read_tomato",
    "tomato_video_candidates",
    "read_jsonl",
    "write_jsonl",
    "generate_benchmark",
    "SYNTHETIC_TASKS",
]


def __getattr__(name: str):
    # The synthetic benchmark is imported on first use, so that `python -m tl_video.data.synthetic`
    # does not find its own module already imported by this package (runpy's RuntimeWarning).
    if name in ("generate_benchmark", "SYNTHETIC_TASKS"):
        from tl_video.data import synthetic

        return synthetic.generate_benchmark if name == "generate_benchmark" else synthetic.TASKS
    raise AttributeError(f"module 'tl_video.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
