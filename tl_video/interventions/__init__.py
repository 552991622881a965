"""Interventions: attention knockout (edges x layer windows), patching by layout group, logit lens, attention maps."""

from tl_video.interventions.attention_maps import video_attention_map
from tl_video.interventions.knockout import (
    EdgeBlock, EdgeCounts, EdgePairs, KeepOnly, KnockoutSpec, RandomEdges, blocked_edges_by_layer, edge_counts, knockout_hooks,
)
from tl_video.interventions.logit_lens import VideoTokenLens, option_probabilities_by_layer, video_token_top_k
from tl_video.interventions.metrics import answer_probability, logit_difference, mean_of, normalized_recovery
from tl_video.interventions.patching import patch_frames, patch_groups, patch_video_tokens, stack_examples
from tl_video.interventions.presets import (
    PRESETS, effective_pathway_spec, preset, random_baseline_for, random_blocking_spec,
)
from tl_video.interventions.windows import WINDOW_STYLES, window_layers

__all__ = [
    "EdgeBlock", "KnockoutSpec", "PRESETS", "VideoTokenLens", "WINDOW_STYLES", "answer_probability",
    "blocked_edges_by_layer", "knockout_hooks", "logit_difference", "mean_of", "normalized_recovery",
    "option_probabilities_by_layer", "patch_frames", "patch_groups", "patch_video_tokens", "preset",
    "stack_examples", "video_attention_map", "video_token_top_k", "window_layers",
    "EdgeCounts", "EdgePairs", "KeepOnly", "RandomEdges", "edge_counts", "effective_pathway_spec",
    "random_baseline_for", "random_blocking_spec",
]
