"""Answer tokens resolved through the tokenizer in context, never by vocabulary lookups of bare strings."""

from __future__ import annotations

from typing import Any

from tl_video.prompts.prepared import PreparedInput


def answer_token_id(tokenizer: Any, rendered: str, answer: str) -> int:
    """The single token the model must emit right after `rendered` to start `answer`.

    Tokenizes the text with and without the answer appended; the answer must add exactly one
    token and leave every earlier token unchanged (otherwise the merge depends on context).
    """
    before = tokenizer(rendered)["input_ids"]
    after = tokenizer(rendered + answer)["input_ids"]
    if after[: len(before)] != before or len(after) != len(before) + 1:
        added = tokenizer.convert_ids_to_tokens(after[len(before) - 1 :])
        raise ValueError(
            f"the answer {answer!r} is not one token after this prompt (the tokenizer gives {added}); "
            "score a multi-token answer by its first token explicitly"
        )
    return int(after[-1])


def option_token_ids(tokenizer: Any, prepared: PreparedInput) -> dict[str, int]:
    """Letter -> token id of every option of a multiple-choice input (e.g. after "Best option:(")."""
    letters = prepared.layout.option_letters
    if not letters:
        raise ValueError("this input has no options; prepare a multiple-choice example")
    return {letter: answer_token_id(tokenizer, prepared.text, letter) for letter in letters}
