"""Interventions: attention knockout (edges x layer windows), patching helpers, logit lens, attention maps."""

from tl_video.interventions.knockout import EdgeBlock, KnockoutSpec, blocked_edges_by_layer, knockout_hooks
from tl_video.interventions.presets import PRESETS, preset
from tl_video.interventions.windows import WINDOW_STYLES, window_layers

__all__ = [
    "EdgeBlock", "KnockoutSpec", "PRESETS", "WINDOW_STYLES", "blocked_edges_by_layer", "knockout_hooks",
    "preset", "window_layers",
]
