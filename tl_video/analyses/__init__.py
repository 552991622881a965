"""The information-flow study as pipelines: each takes a model, examples and options and returns a typed result.

Results are written as JSONL records while they are produced (`records`), summarised with seeded
bootstrap intervals and permutation tests (`statistics`), and drawn by `tl_video.plots`.
"""

from tl_video.analyses.records import RecordSink, RunHeader, read_records, read_run
from tl_video.analyses.scoring import ScoredExample, StudyOptions, score_example
from tl_video.analyses.statistics import Finding, MeanCI, mean_ci, paired_permutation_p
from tl_video.analyses.sweep import knockout_probabilities

__all__ = [
    "Finding", "MeanCI", "RecordSink", "RunHeader", "ScoredExample", "StudyOptions", "knockout_probabilities",
    "mean_ci", "paired_permutation_p", "read_records", "read_run", "score_example",
]
