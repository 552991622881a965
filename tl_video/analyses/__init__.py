"""The information-flow study as pipelines: each takes a model, examples and options and returns a typed result.

Results are written as JSONL records while they are produced (`records`), summarised with seeded
bootstrap intervals and permutation tests (`statistics`), and drawn by `tl_video.plots`. Every
term is defined in the repository's `docs/methods.md`.

    >>> result = run_flow(model, examples, FlowOptions(presets=("vql-to-ql",)), out_dir="run")  # doctest: +SKIP
    >>> result.findings()                                                                     # doctest: +SKIP
"""

from tl_video.analyses.attention import AttentionOptions, AttentionResult, run_attention
from tl_video.analyses.flow import FlowOptions, FlowResult, effective_ranges, run_flow
from tl_video.analyses.generation_probability import (
    GenerationProbabilityOptions, GenerationProbabilityResult, run_generation_probability,
)
from tl_video.analyses.knockout_attribution import KnockoutAttribution, knockout_attribution
from tl_video.analyses.lens import LensOptions, LensResult, run_lens
from tl_video.analyses.open_ended import OpenEndedOptions, OpenEndedResult, run_open_ended
from tl_video.analyses.patching import PatchingOptions, PatchingResult, run_patching
from tl_video.analyses.pathways import PathwayOptions, PathwayResult, run_pathways
from tl_video.analyses.records import RecordSink, RunHeader, read_analysis, read_records, read_run
from tl_video.analyses.scoring import ScoredExample, StudyOptions, score_example
from tl_video.analyses.statistics import Finding, MeanCI, mean_ci, paired_permutation_p
from tl_video.analyses.study import run_study
from tl_video.analyses.sweep import knockout_probabilities

__all__ = [
    "AttentionOptions", "AttentionResult", "Finding", "FlowOptions", "FlowResult", "GenerationProbabilityOptions",
    "GenerationProbabilityResult", "KnockoutAttribution", "LensOptions", "LensResult", "MeanCI", "OpenEndedOptions",
    "OpenEndedResult",
    "PatchingOptions", "PatchingResult", "PathwayOptions", "PathwayResult", "RecordSink", "RunHeader", "ScoredExample",
    "StudyOptions", "effective_ranges", "knockout_attribution", "knockout_probabilities", "mean_ci", "paired_permutation_p",
    "read_analysis",
    "read_records", "read_run", "run_attention", "run_flow", "run_generation_probability", "run_lens",
    "run_open_ended", "run_patching", "run_pathways", "run_study", "score_example",
]
