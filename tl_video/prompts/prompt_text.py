"""User text that knows where its parts are: named character spans, later mapped to tokens.

Multiple-choice prompts follow docs/methods.md ("Data"): "Question: {q}\nOptions:\n(A) ...\n(B) ...",
then "Only give the best option."; the answer prompt "Best option:(" is appended after the
assistant tag by `prepare`. Spans are half-open character ranges of `text`. A plain prompt (a
question without options) is its own `question` and `question_without_options` segment.

The builders refuse nonsense rather than guess: an answer index that is not an int in range, more
than 26 options, options given as one string or a mapping, a question or option that would leave
a segment empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral

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
        if not isinstance(self.text, str):
            raise TypeError(f"PromptText.text must be a string, got {type(self.text).__name__}")
        for name, (start, end) in self.spans.items():
            if not 0 <= start <= end <= len(self.text):
                raise ValueError(f"span {name!r} = [{start}, {end}) lies outside the {len(self.text)}-character text")

    def check_no_placeholder(self, placeholder: str) -> None:
        """Raise if a named span holds the video placeholder (it would move the video into the question)."""
        for name, (start, end) in self.spans.items():
            if placeholder in self.text[start:end]:
                raise ValueError(
                    f"segment {name!r} of the prompt contains the video placeholder {placeholder!r}; "
                    "remove it from the question and options (the video is placed by prepare)"
                )


def plain_prompt(text: str, placeholder: str | None = None) -> PromptText:
    """A question without options: its stripped text is the `question` (and `question_without_options`).

    Text that already holds the video placeholder is a whole conversation written by the user; it
    gets no question segment (which part is the question cannot be known).
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a string or a PromptText, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped or (placeholder and placeholder in text):
        return PromptText(text)
    start = text.index(stripped)
    span = (start, start + len(stripped))
    return PromptText(text, {"question": span, "question_without_options": span})


def multiple_choice_prompt(
    question: str,
    options: Sequence[str],
    answer_index: int | None = None,
    instruction: str = MC_INSTRUCTION,
    instruction_separator: str = "\n",
) -> PromptText:
    """The paper's multiple-choice user text with spans: question, question_without_options, option[X].

    `instruction` follows the last option after `instruction_separator` (the reference code's
    MVBench text puts " \\n" there; see `tl_video.prompts.paper`).
    """
    question, options = _checked_question(question), _checked_options(options)
    letters = tuple(OPTION_LETTERS[: len(options)])
    true_option = None if answer_index is None else letters[_checked_answer_index(answer_index, len(options))]
    pieces: list[str] = []
    spans: dict[str, tuple[int, int]] = {}

    def add(piece: str, name: str | None = None) -> None:
        start = sum(len(p) for p in pieces)
        pieces.append(piece)
        if name is not None:
            spans[name] = (start, start + len(piece))

    add("Question: ")
    add(question, "question_without_options")
    add("\nOptions:")
    for letter, option in zip(letters, options):
        add("\n")
        add(f"({letter}) {option}", f"option[{letter}]")
    question_end = sum(len(p) for p in pieces)
    add(instruction_separator + instruction)
    spans["question"] = (0, question_end)
    return PromptText("".join(pieces), spans, true_option, letters)


def _checked_question(question: object) -> str:
    if not isinstance(question, str):
        raise TypeError(f"question must be a string, got {type(question).__name__} {question!r}")
    if not question.strip():
        raise ValueError(
            f"question {question!r} is empty after stripping whitespace, so question_without_options would "
            "hold no token; give the question text"
        )
    return question.strip()


def _checked_options(options: object) -> list[str]:
    if options is None:
        raise TypeError("options is None; give a list of option strings, e.g. ['left', 'right']")
    if isinstance(options, (str, bytes)):
        raise TypeError(
            f"options must be a list of strings, got the single string {options!r}; write ['left', 'right'], "
            "not 'left right'"
        )
    if isinstance(options, Mapping):
        raise TypeError(
            f"options must be a list of strings, got a mapping with keys {list(options)[:4]}; pass the option texts "
            "in order, e.g. list(mapping.values())"
        )
    if not isinstance(options, Sequence):
        raise TypeError(f"options must be a list or tuple of strings (in order), got {type(options).__name__}")
    if not options:
        raise ValueError("a multiple-choice prompt needs at least one option")
    if len(options) > len(OPTION_LETTERS):
        raise ValueError(
            f"{len(options)} options given; at most {len(OPTION_LETTERS)} can be lettered A..Z (none is dropped); "
            "remove options"
        )
    checked = []
    for index, option in enumerate(options):
        letter = OPTION_LETTERS[index]
        if not isinstance(option, str):
            raise TypeError(f"option {letter} (index {index}) must be a string, got {type(option).__name__} {option!r}")
        if not option.strip():
            raise ValueError(f"option {letter} (index {index}) is empty after stripping whitespace; give its text")
        checked.append(option.strip())
    return checked


def _checked_answer_index(answer_index: object, n_options: int) -> int:
    if isinstance(answer_index, bool) or not isinstance(answer_index, Integral):
        raise TypeError(
            f"answer_index must be an int in 0..{n_options - 1} (or None), got {type(answer_index).__name__} "
            f"{answer_index!r}"
        )
    if not 0 <= int(answer_index) < n_options:
        raise ValueError(
            f"answer_index={int(answer_index)} is out of range for {n_options} options; give 0..{n_options - 1} "
            "(negative indices are not accepted)"
        )
    return int(answer_index)
