"""User text that knows where its parts are: named character spans, later mapped to tokens.

Multiple-choice prompts follow METHODS.md ("Data"): "Question: {q}\nOptions:\n(A) ...\n(B) ...",
then "Only give the best option."; the answer prompt "Best option:(" is appended after the
assistant tag by `prepare`. Spans are half-open character ranges of `text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tl_video.data.examples import OPTION_LETTERS

MC_INSTRUCTION = "Only give the best option."
MC_ANSWER_PREFIX = "Best option:("


@dataclass(frozen=True)
class PromptText:
    text: str
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # segment name -> [start, end)
    true_option: str | None = None  # letter of the correct option, when known
    option_letters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, (start, end) in self.spans.items():
            if not 0 <= start <= end <= len(self.text):
                raise ValueError(f"span {name!r} = [{start}, {end}) lies outside the {len(self.text)}-character text")


def multiple_choice_prompt(
    question: str,
    options: tuple[str, ...] | list[str],
    answer_index: int | None = None,
    instruction: str = MC_INSTRUCTION,
) -> PromptText:
    """The paper's multiple-choice user text with spans: question, question_without_options, option[X]."""
    if not options:
        raise ValueError("a multiple-choice prompt needs at least one option")
    pieces: list[str] = []
    spans: dict[str, tuple[int, int]] = {}

    def add(piece: str, name: str | None = None) -> None:
        start = sum(len(p) for p in pieces)
        pieces.append(piece)
        if name is not None:
            spans[name] = (start, start + len(piece))

    add("Question: ")
    add(question.strip(), "question_without_options")
    add("\nOptions:")
    letters = tuple(OPTION_LETTERS[: len(options)])
    for letter, option in zip(letters, options):
        add("\n")
        add(f"({letter}) {option.strip()}", f"option[{letter}]")
    question_end = sum(len(p) for p in pieces)
    add("\n" + instruction)
    spans["question"] = (0, question_end)
    true_option = None if answer_index is None else letters[answer_index]
    return PromptText("".join(pieces), spans, true_option, letters)
