"""The `paper` prompt style reproduces the reference code's literal text per family.

The expected strings are written out here from the reference implementation (MVBench
conversation `conv_eval_mvbench`: system + " " + "USER: " + video + "\\n" + " " + "USER: " + query +
" " + "ASSISTANT:" + "Best option:("; VideoLLaMA3's TVBench instruction through its chat template),
not produced by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

import tl_video
from tl_video.data import VideoQAExample
from tl_video.prompts import multiple_choice_prompt, prepare_example
from tl_video.prompts.paper import paper_format, render_mvbench
from tl_video.testing import save_tiny_internvl, save_tiny_pllava, save_tiny_videollama3
from tests.conftest import random_video

SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
    "objects, and the action and pose of persons. Based on your observations, select the best option that "
    "accurately addresses the question.\n"
)
QUESTION, OPTIONS = "Which way did the square move?", ("left", "right", "up", "down")
QUERY = "Question: Which way did the square move?\nOptions:\n(A) left\n(B) right\n(C) up\n(D) down"


def mvbench_text(video: str) -> str:
    return f"{SYSTEM} USER: {video}\n USER: {QUERY} \nOnly give the best option. ASSISTANT:Best option:("


def example() -> VideoQAExample:
    return VideoQAExample(example_id="e", video="unused.mp4", question=QUESTION, options=OPTIONS, answer_index=1)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_prompts")
    load = tl_video.HookedVideoTransformer.from_pretrained
    return {
        "pllava": load(save_tiny_pllava(root / "pllava")),
        "internvl": load(save_tiny_internvl(root / "internvl")),
        "videollama3": load(save_tiny_videollama3(root / "videollama3", use_token_compression=False)),
    }


def decode(model, prepared, name: str) -> str:
    return model.to_string(prepared.tokens[0, prepared.layout.positions(name)])


def assert_mc_segments(model, prepared, answer_prompt: str | None) -> None:
    assert decode(model, prepared, "question_without_options").strip() == QUESTION
    assert decode(model, prepared, "question").strip() == QUERY
    assert [decode(model, prepared, f"option[{l}]").strip() for l in "ABCD"] == ["(A) left", "(B) right", "(C) up", "(D) down"]
    assert decode(model, prepared, "true_option").strip() == "(B) right"
    if answer_prompt is None:
        assert "answer_prompt" not in prepared.layout.segments
    else:
        assert decode(model, prepared, "answer_prompt").strip() == answer_prompt


def test_llava_next_video_paper_text_is_the_mvbench_conversation(model):
    prepared = prepare_example(model, example(), video=random_video(0), prompt_style="paper")
    assert prepared.text == mvbench_text("<video>")
    assert prepared.prompt_style == "paper"
    assert_mc_segments(model, prepared, "Best option:(")
    assert decode(model, prepared, "system") == SYSTEM


def test_chat_style_is_the_default_and_recorded(model):
    prepared = prepare_example(model, example(), video=random_video(0))
    assert prepared.prompt_style == "chat"
    assert prepared.text.endswith("\nOnly give the best option. ASSISTANT: Best option:(")
    assert_mc_segments(model, prepared, "Best option:(")


def test_builtin_model_paper_segments_with_merged_tokens():
    """A tokenizer with merges: "ASSISTANT:Best", " \\nOnly" and "(D) down \\n" sit at segment edges."""
    toy = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
    frames = np.random.RandomState(0).randint(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    prepared = prepare_example(toy, example(), video=frames, prompt_style="paper")
    assert prepared.text == mvbench_text("<video>")
    assert_mc_segments(toy, prepared, "Best option:(")


def test_pllava_paper_text(families):
    pllava = families["pllava"]
    prepared = prepare_example(pllava, example(), video=random_video(1), prompt_style="paper")
    assert prepared.text == mvbench_text(pllava.frontend.video_placeholder)
    assert_mc_segments(pllava, prepared, "Best option:(")


def test_internvl_paper_text(families):
    internvl = families["internvl"]
    prepared = prepare_example(internvl, example(), video=random_video(2, height=28, width=28), prompt_style="paper")
    assert prepared.text == mvbench_text(internvl.frontend.video_placeholder)
    assert_mc_segments(internvl, prepared, "Best option:(")


def test_phi3_internvl_uses_the_phi3_roles():
    """Mini-InternVL-4B (Phi-3 LM) ran with `conv_eval_mvbench_phi3`: "<|user|>\\n"/"<|assistant|>\\n" roles."""
    user_text = f"{QUERY} \nOnly give the best option."
    assert render_mvbench(user_text, "<video>", multiple_choice=True, system=None, answer_prefix="Best option:(",
                          phi3_roles=True) == (
        f"{SYSTEM} <|user|>\n<video>\n <|user|>\n{user_text} <|assistant|>\nBest option:("
    )


def test_videollama3_paper_prompt_is_its_tvbench_instruction_without_answer_prefix(families):
    vl3 = families["videollama3"]
    prepared = prepare_example(vl3, example(), video=random_video(3, frames=3, height=24, width=24), prompt_style="paper")
    instruction = (
        "Question: Which way did the square move?\nOptions:\n(A) left\n(B) right\n(C) up\n(D) down\n"
        "Answer with the option's letter from the given choices directly and only give the best option."
    )
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": instruction}]}]
    assert prepared.text == vl3.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prepared.text.endswith("assistant\n")  # no "Best option:("
    assert_mc_segments(vl3, prepared, None)


def test_open_ended_paper_prompt(model):
    prepared = model.prepare(video=random_video(4), prompt="What happens?", prompt_style="paper")
    assert prepared.text == (
        "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
        "objects, and the action and pose of persons. Based on your observations, answer the question concisely.\n"
        " USER: <video>\n USER: What happens? ASSISTANT:"
    )
    assert decode(model, prepared, "question").strip() == "What happens?"


def test_paper_style_errors(model):
    with pytest.raises(ValueError, match=r"prompt_style='fancy'; valid: chat, paper"):
        model.prepare(video=random_video(5), prompt="What?", prompt_style="fancy")
    with pytest.raises(ValueError, match=r"no prompt for the 'qwen2_5_vl' family .*use prompt_style='chat'"):
        paper_format("qwen2_5_vl")


def test_a_user_prompt_text_in_paper_style_keeps_its_segments(model):
    prompt = multiple_choice_prompt(QUESTION, OPTIONS, 2, instruction_separator=" \n")
    prepared = model.prepare(video=random_video(6), prompt=prompt, answer_prefix="Best option:(", prompt_style="paper")
    assert prepared.text == mvbench_text("<video>")
    assert decode(model, prepared, "true_option") == "(C) up"
