"""The `paper` prompt style: the reference study's literal prompt text, per family.

The information-flow paper's released code does not use chat templates for LLaVA-NeXT(-Video),
PLLaVA and InternVL: it renders the MVBench evaluation conversation as plain text,

    {MVBench system text} USER: {video}\\n USER: Question: {q}\\nOptions:\\n(A) ...\\n(D) ... \\nOnly give the best option. ASSISTANT:Best option:(

(two USER turns, a space before "\\nOnly", no space after "ASSISTANT:"), or, for an InternVL whose
language model is Phi-3 (Mini-InternVL-4B), the same conversation with "<|user|>\\n" and
"<|assistant|>\\n" roles. VideoLLaMA3 uses its own TVBench instruction through its chat template
and no answer prefix. Baseline accuracy, hence the correct-only example set and every curve,
depends on this text, so `prepare(..., prompt_style="paper")` reproduces it; the default
`prompt_style="chat"` uses each checkpoint's own chat template (docs/methods.md, "Data").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tl_video.prompts.prompt_text import PromptText, multiple_choice_prompt
from tl_video.prompts.render import render_prompt

PROMPT_STYLES = ("chat", "paper")

MVBENCH_SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
    "movement of objects, and the action and pose of persons. Based on your observations, select the best "
    "option that accurately addresses the question.\n"
)
MVBENCH_SYSTEM_OPEN_ENDED = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
    "movement of objects, and the action and pose of persons. Based on your observations, answer the "
    "question concisely.\n"
)
MVBENCH_INSTRUCTION = "Only give the best option."
MVBENCH_INSTRUCTION_SEPARATOR = " \n"  # the reference appends " " + "\nOnly give the best option."
MVBENCH_ANSWER_PREFIX = "Best option:("
VIDEOLLAMA3_INSTRUCTION = "Answer with the option's letter from the given choices directly and only give the best option."
VIDEOLLAMA3_INSTRUCTION_SEPARATOR = "\n"  # every option line ends in "\n", then the instruction follows

MVBENCH_FAMILIES = ("llava_next_video", "pllava", "internvl")
CHAT_TEMPLATE_FAMILIES = ("videollama3",)


@dataclass(frozen=True)
class PaperFormat:
    """How the reference writes a multiple-choice prompt for one family."""

    instruction: str
    instruction_separator: str
    answer_prefix: str


def paper_format(family: str) -> PaperFormat:
    """The reference's instruction, its separator from the options, and the answer prefix."""
    if family in MVBENCH_FAMILIES:
        return PaperFormat(MVBENCH_INSTRUCTION, MVBENCH_INSTRUCTION_SEPARATOR, MVBENCH_ANSWER_PREFIX)
    if family in CHAT_TEMPLATE_FAMILIES:
        return PaperFormat(VIDEOLLAMA3_INSTRUCTION, VIDEOLLAMA3_INSTRUCTION_SEPARATOR, "")
    raise ValueError(
        f"the reference code has no prompt for the {family!r} family (it covers "
        f"{', '.join(MVBENCH_FAMILIES + CHAT_TEMPLATE_FAMILIES)}); use prompt_style='chat'"
    )


def check_prompt_style(prompt_style: Any) -> str:
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style={prompt_style!r}; valid: {', '.join(PROMPT_STYLES)}")
    return prompt_style


def uses_chat_template(family: str) -> bool:
    """Whether the family's paper prompt goes through the checkpoint's chat template (VideoLLaMA3)."""
    paper_format(family)
    return family in CHAT_TEMPLATE_FAMILIES


def render_mvbench(
    user_text: str, placeholder: str, *, multiple_choice: bool, system: str | None, answer_prefix: str, phi3_roles: bool
) -> str:
    """The reference's `Conversation.get_prompt()` for MVBench evaluation, written out.

    system + " " + user + "{video}\\n" + " " + user + user_text + " " + assistant + answer_prefix, with
    user/assistant "USER: "/"ASSISTANT:" (or Phi-3's "<|user|>\\n"/"<|assistant|>\\n").
    """
    if system is None:
        system = MVBENCH_SYSTEM if multiple_choice else MVBENCH_SYSTEM_OPEN_ENDED
    user, assistant = ("<|user|>\n", "<|assistant|>\n") if phi3_roles else ("USER: ", "ASSISTANT:")
    head = f"{system} " if system else ""
    return f"{head}{user}{placeholder}\n {user}{user_text} {assistant}{answer_prefix}"


def paper_multiple_choice_prompt(
    family: str, question: str, options: Any, answer_index: int | None = None
) -> tuple[PromptText, str]:
    """The reference's multiple-choice user text for `family`, and its answer prefix ("" for VideoLLaMA3)."""
    form = paper_format(family)
    prompt = multiple_choice_prompt(
        question, options, answer_index, instruction=form.instruction, instruction_separator=form.instruction_separator
    )
    return prompt, form.answer_prefix


def render_paper_prompt(
    processor: Any, prompt: PromptText, family: str, placeholder: str, *, system: str | None, answer_prefix: str
) -> tuple[str, str | None]:
    """The full reference text around `prompt` and the system text it holds (None if none).

    A prompt that already holds the video placeholder is used as written, as in the chat style.
    """
    if prompt.text.count(placeholder) >= 1 or uses_chat_template(family):
        text = render_prompt(processor, prompt.text, placeholder, system=system, answer_prefix=answer_prefix)
        return text, system
    tokenizer = getattr(processor, "tokenizer", processor)
    phi3_roles = family == "internvl" and "<|user|>" in tokenizer.get_vocab()
    multiple_choice = bool(prompt.option_letters)
    if system is None:
        system = MVBENCH_SYSTEM if multiple_choice else MVBENCH_SYSTEM_OPEN_ENDED
    text = render_mvbench(
        prompt.text, placeholder, multiple_choice=multiple_choice, system=system, answer_prefix=answer_prefix,
        phi3_roles=phi3_roles,
    )
    return text, system or None
