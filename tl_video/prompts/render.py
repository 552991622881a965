"""Render a user prompt with the video placeholder, through the checkpoint's chat template."""

from __future__ import annotations

from typing import Any


def render_prompt(
    processor: Any,
    prompt: str,
    placeholder: str,
    *,
    system: str | None = None,
    answer_prefix: str = "",
    use_chat_template: bool = True,
) -> str:
    """Text with exactly one `placeholder` where the video goes.

    Text that already contains the placeholder is used as written. Otherwise the prompt is
    wrapped in the checkpoint's chat template with the video first; without a template, the
    placeholder, a newline and the text. `answer_prefix` (e.g. "Best option:(") is appended
    after the assistant tag, separated by one space when the template ends in a non-space
    character (Vicuna's "ASSISTANT:"), directly after a newline (ChatML's "assistant\n").
    """
    count = prompt.count(placeholder)
    if count > 1:
        raise ValueError(
            f"the prompt contains the video placeholder {placeholder!r} {count} times; one video is "
            "prepared per input, so keep exactly one"
        )
    if count == 1:
        return _append(prompt, answer_prefix)
    template = getattr(processor, "chat_template", None) or getattr(
        getattr(processor, "tokenizer", None), "chat_template", None
    )
    if not use_chat_template or not template:
        return _append(f"{placeholder}\n{prompt}", answer_prefix)
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]})
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if rendered.count(placeholder) != 1:
        raise ValueError(
            f"the chat template rendered {rendered.count(placeholder)} video placeholders {placeholder!r}; "
            "write the prompt with the placeholder yourself"
        )
    return _append(rendered, answer_prefix)


def _append(rendered: str, answer_prefix: str) -> str:
    if answer_prefix and rendered and not rendered[-1].isspace() and not answer_prefix[0].isspace():
        return f"{rendered} {answer_prefix}"
    return rendered + answer_prefix
