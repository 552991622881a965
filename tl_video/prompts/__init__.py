"""Prompts, prepared inputs and the token layout."""

from tl_video.prompts.layout import Span, TokenLayout
from tl_video.prompts.prepare import prepare_example, prepare_input
from tl_video.prompts.prepared import PreparedInput
from tl_video.prompts.prompt_text import MC_ANSWER_PREFIX, MC_INSTRUCTION, PromptText, multiple_choice_prompt

__all__ = [
    "MC_ANSWER_PREFIX", "MC_INSTRUCTION", "PreparedInput", "PromptText", "Span", "TokenLayout",
    "multiple_choice_prompt", "prepare_example", "prepare_input",
]
