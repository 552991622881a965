"""Plotly figures of study results: data in, `plotly.graph_objects.Figure` out; no computation on models."""

from tl_video.plots.style import FLOW_STYLES, flow_style, save_figure, static_export_available

__all__ = ["FLOW_STYLES", "flow_style", "save_figure", "static_export_available"]
