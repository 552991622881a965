"""Prompt builders refuse nonsense with one clear line; a plain prompt is its own question."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from tl_video.interventions import knockout_hooks, preset
from tl_video.prompts import PromptText, multiple_choice_prompt, plain_prompt
from tests.conftest import random_video

OPTIONS = ["left", "right", "up", "down"]


@pytest.mark.parametrize(
    ("answer_index", "error", "match"),
    [
        (-1, ValueError, r"answer_index=-1 is out of range for 4 options; give 0\.\.3"),
        (4, ValueError, r"answer_index=4 is out of range"),
        (1.0, TypeError, r"answer_index must be an int in 0\.\.3 \(or None\), got float 1\.0"),
        ("1", TypeError, r"got str '1'"),
        (True, TypeError, r"got bool True"),
    ],
)
def test_answer_index_must_be_an_int_in_range(answer_index, error, match):
    with pytest.raises(error, match=match):
        multiple_choice_prompt("Which way?", OPTIONS, answer_index)


def test_numpy_integer_answer_index_is_an_int():
    assert multiple_choice_prompt("Which way?", OPTIONS, np.int64(3)).true_option == "D"


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ("left right", TypeError, r"got the single string 'left right'"),
        ({"a": "left", "b": "right"}, TypeError, r"got a mapping with keys \['a', 'b'\]"),
        (OrderedDict(a="left"), TypeError, r"got a mapping"),
        (None, TypeError, r"options is None"),
        ({"left", "right"}, TypeError, r"list or tuple of strings \(in order\), got set"),
        ([], ValueError, r"at least one option"),
        (["left", 3], TypeError, r"option B \(index 1\) must be a string, got int 3"),
        (["left", "  "], ValueError, r"option B \(index 1\) is empty"),
        ([f"o{i}" for i in range(27)], ValueError, r"27 options given; at most 26 can be lettered A\.\.Z \(none is dropped\)"),
    ],
)
def test_options_must_be_a_list_of_strings(options, error, match):
    with pytest.raises(error, match=match):
        multiple_choice_prompt("Which way?", options, 0)


def test_twenty_six_options_all_get_letters():
    prompt = multiple_choice_prompt("Which?", [f"o{i}" for i in range(26)], 25)
    assert prompt.option_letters[-1] == "Z" and prompt.true_option == "Z"
    assert prompt.text[slice(*prompt.spans["option[Z]"])] == "(Z) o25"


@pytest.mark.parametrize(
    ("question", "error", "match"),
    [
        ("   ", ValueError, r"question '   ' is empty after stripping whitespace, so question_without_options"),
        ("", ValueError, r"question_without_options would hold no token"),
        (None, TypeError, r"question must be a string, got NoneType"),
    ],
)
def test_question_must_have_text(question, error, match):
    with pytest.raises(error, match=match):
        multiple_choice_prompt(question, OPTIONS, 0)


def test_each_error_is_one_line():
    for call in [
        lambda: multiple_choice_prompt("Q?", OPTIONS, -1),
        lambda: multiple_choice_prompt("Q?", "ab", 0),
        lambda: multiple_choice_prompt("Q?", [str(i) for i in range(30)], 0),
        lambda: multiple_choice_prompt(" ", OPTIONS, 0),
    ]:
        with pytest.raises(Exception) as caught:
            call()
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "prompt",
    [
        lambda: multiple_choice_prompt("What is in <video> here?", OPTIONS, 0),
        lambda: multiple_choice_prompt("Which way?", ["left", "<video>", "up"], 0),
    ],
)
def test_the_video_placeholder_inside_a_question_or_option_is_refused(model, prompt):
    with pytest.raises(ValueError, match=r"segment '(question_without_options|option\[B\])'.* contains the video placeholder '<video>'"):
        model.prepare(video=random_video(0), prompt=prompt())


def test_plain_prompt_is_its_question():
    prompt = plain_prompt("  What happens next?\n")
    assert prompt.text[slice(*prompt.spans["question"])] == "What happens next?"
    assert prompt.spans["question_without_options"] == prompt.spans["question"]
    assert plain_prompt("USER: <video>\nWhat?", "<video>").spans == {}  # a user-written conversation
    assert plain_prompt("   ").spans == {}


def test_vql_to_ql_runs_on_a_plain_prompt(model):
    """Issue 10: the README's plain-string prompt failed with 'unknown selector question'."""
    prepared = model.prepare(video=random_video(3), prompt="What happens in the video?")
    layout = prepared.layout
    assert model.to_string(prepared.tokens[0, layout.positions("question")]).strip() == "What happens in the video?"
    n_layers = model.cfg.n_layers
    logits = []
    for spec in preset("vql-to-ql", layout, range(n_layers)):
        with torch.no_grad(), model.hooks(fwd_hooks=knockout_hooks(spec, layout, n_layers)):
            logits.append(model(prepared.tokens)[0, -1])
    with torch.no_grad():
        clean = model(prepared.tokens)[0, -1]
    assert len(logits) == 4 and not torch.allclose(logits[0], clean)  # Video->Question changes the answer


def test_prompt_text_rejects_a_non_string():
    with pytest.raises(TypeError, match="PromptText.text must be a string"):
        PromptText(None)  # type: ignore[arg-type]
