"""Prompts, prepared inputs and the token layout."""

from tl_video.prompts.layout import Span, TokenLayout
from tl_video.prompts.prepare import prepare_input
from tl_video.prompts.prepared import PreparedInput

__all__ = ["PreparedInput", "Span", "TokenLayout", "prepare_input"]
