"""Prompts, prepared inputs and the token layout."""

from tl_video.prompts.layout import SelectorError, Span, TokenLayout
from tl_video.prompts.paper import PROMPT_STYLES, paper_multiple_choice_prompt
from tl_video.prompts.prepare import prepare_example, prepare_input
from tl_video.prompts.prepared import PreparedInput
from tl_video.prompts.prompt_text import (
    MC_ANSWER_PREFIX, MC_INSTRUCTION, PromptText, multiple_choice_prompt, plain_prompt,
)

__all__ = [
    "MC_ANSWER_PREFIX", "MC_INSTRUCTION", "PROMPT_STYLES", "PreparedInput", "PromptText", "SelectorError", "Span",
    "TokenLayout", "multiple_choice_prompt", "paper_multiple_choice_prompt", "plain_prompt", "prepare_example",
    "prepare_input",
]
