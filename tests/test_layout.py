"""The token layout: checked against an independent reconstruction, and its properties under corruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_video.interventions import KnockoutSpec, knockout_hooks, mean_of, patch_groups, video_attention_map
from tl_video.prompts import multiple_choice_prompt
from tl_video.prompts.layout import SelectorError, TokenLayout
from tl_video.video import blank, freeze, gaussian_noise, reverse, shuffle, swap_spans
from tests.conftest import random_video


def find_subsequence(haystack: list[int], needle: list[int]) -> int:
    matches = [i for i in range(len(haystack) - len(needle) + 1) if haystack[i : i + len(needle)] == needle]
    assert len(matches) == 1, f"expected one occurrence, found {len(matches)}"
    return matches[0]


def test_layout_matches_an_independent_reconstruction(model):
    """Video positions, frames, grid and text segments rebuilt from the processor's ids alone."""
    question, options = "Where did the red ball roll?", ["under the bed", "out the door", "nowhere"]
    prepared = model.prepare(video=random_video(50), prompt=multiple_choice_prompt(question, options, 1),
                             answer_prefix="Best option:(")
    processed = model.processor(text=prepared.text, videos=[prepared.frames], return_tensors="pt")
    ids = processed["input_ids"][0].tolist()
    video_id = model.frontend.video_token_id
    video_positions = [i for i, token in enumerate(ids) if token == video_id]
    per_frame = len(video_positions) // 4
    side = int(per_frame**0.5)
    layout = prepared.layout
    assert list(layout.video_positions) == video_positions
    for frame in range(4):
        assert layout.positions(f"frame[{frame}]").tolist() == video_positions[frame * per_frame : (frame + 1) * per_frame]
    expected_grid = [(f, r, c) for f in range(4) for r in range(side) for c in range(side)]
    assert list(layout.video_grid) == expected_grid
    encode = lambda text: model.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    start = find_subsequence(ids, encode(question))
    assert layout.positions("question_without_options").tolist() == list(range(start, start + len(encode(question))))
    option_b = "(B) out the door"
    start = find_subsequence(ids, encode(option_b))
    assert layout.positions("true_option").tolist() == list(range(start, start + len(encode(option_b))))
    assert layout.positions("last").tolist() == [len(ids) - 1]
    assert model.to_string(prepared.tokens[0, layout.positions("answer_prompt")]) == "Best option:("


printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="<>"), min_size=1, max_size=30)
CORRUPTIONS = [
    lambda f: reverse(f), lambda f: shuffle(f, seed=3), lambda f: freeze(f, 0), lambda f: gaussian_noise(f, 20.0, seed=1),
    lambda f: blank(f, [0]), lambda f: swap_spans(f, (0, 1), (1, 2)),
]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    question=printable.filter(lambda s: s.strip()),
    options=st.lists(printable.filter(lambda s: s.strip()), min_size=2, max_size=5),
    answer=st.integers(min_value=0, max_value=4),
    n_frames=st.integers(min_value=2, max_value=5),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_segments_are_disjoint_exact_and_survive_every_corruption(model, question, options, answer, n_frames, seed):
    prompt = multiple_choice_prompt(question, options, answer % len(options))
    frames = np.random.RandomState(seed).randint(0, 256, (n_frames, 32, 32, 3), dtype=np.uint8)
    prepared = model.prepare(video=frames, prompt=prompt, answer_prefix="Best option:(")
    layout: TokenLayout = prepared.layout
    sets = {name: set(layout.positions(name).tolist()) for name in layout.segments}
    frame_sets = [set(layout.positions(f"frame[{f}]").tolist()) for f in range(layout.n_frames)]
    assert layout.n_frames == n_frames
    assert set().union(*frame_sets) == set(layout.video_positions)
    assert sum(len(s) for s in frame_sets) == len(layout.video_positions)
    options_sets = [sets[f"option[{letter}]"] for letter in layout.option_letters]
    assert sum(len(s) for s in options_sets) == len(set().union(*options_sets))
    assert set().union(*options_sets) <= sets["question"]
    assert not (sets["question_without_options"] & set().union(*options_sets))
    for a, b in [("question", "video"), ("question", "answer_prompt"), ("video", "answer_prompt")]:
        assert not (sets[a] & sets[b]), f"{a} overlaps {b}"
    decode = lambda name: model.to_string(prepared.tokens[0, layout.positions(name)])  # noqa: E731
    assert decode("question_without_options") == question.strip()
    for letter, option in zip(layout.option_letters, options):
        assert decode(f"option[{letter}]") == f"({letter}) {option.strip()}"
    assert decode("true_option") == f"({layout.true_option}) {options[answer % len(options)].strip()}"
    for corruption in CORRUPTIONS:
        corrupted = model.prepare(video=corruption(frames), prompt=prompt, answer_prefix="Best option:(")
        corrupted.layout.check_same_as(layout)
        assert corrupted.layout == layout


def test_selectors_resolve_and_errors_name_the_valid_ones(model):
    prepared = model.prepare(video=random_video(51), prompt="Plain question?")
    layout = prepared.layout
    assert layout.positions("frame[-1]").tolist() == layout.positions("frame[3]").tolist()
    assert torch.equal(layout.positions("frame[1:3]"), torch.cat([layout.positions("frame[1]"), layout.positions("frame[2]")]))
    assert len(layout.positions("text")) + len(layout.positions("video")) == layout.n_tokens
    with pytest.raises(KeyError, match="valid: all, last, video"):
        layout.positions("questoin")
    with pytest.raises(IndexError, match="4 frames"):
        layout.positions("frame[4]")
    with pytest.raises(KeyError, match="no options"):
        layout.positions("true_option")


def test_layouts_that_differ_are_named(model):
    a = model.prepare(video=random_video(52), prompt="Same question?")
    b = model.prepare(video=random_video(52, frames=3), prompt="Same question?")
    with pytest.raises(ValueError, match="layouts differ"):
        a.layout.check_same_as(b.layout)


@pytest.fixture(scope="module")
def mc_prepared(model):
    prompt = multiple_choice_prompt("Where did the red ball roll?", ["under the bed", "out the door", "nowhere"], 1)
    return model.prepare(video=random_video(53), prompt=prompt, answer_prefix="Best option:(")


ATOMS = ["all", "last", "video", "text", "question", "question_without_options", "option[A]", "option[C]",
         "true_option", "false_options", "answer_prompt", "frame[0]", "frame[-1]", "frame[1:3]", "frame[2:]",
         "pos[0, 3, 5]", "pos[-2]", "pos[10:20]", "pos[:4]", "pos[-5:]"]


def expressions(layout_n: int):
    """(selector text, a function of atom -> set giving the expected set) for random expression trees."""
    atom = st.sampled_from(ATOMS).map(lambda a: (a, lambda sets, a=a: sets[a]))

    def extend(children):
        binary = st.tuples(children, st.sampled_from(["|", "+", "-", "&"]), children).map(
            lambda t: (f"({t[0][0]}) {t[1]} ({t[2][0]})", lambda sets, t=t: {
                "|": set.__or__, "+": set.__or__, "-": set.__sub__, "&": set.__and__}[t[1]](t[0][1](sets), t[2][1](sets))))
        unary = st.tuples(st.sampled_from(["~", "not "]), children).map(
            lambda t: (f"{t[0]}({t[1][0]})", lambda sets, t=t: set(range(layout_n)) - t[1][1](sets)))
        return st.one_of(binary, unary)

    return st.recursive(atom, extend, max_leaves=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_selector_set_algebra_agrees_with_python_sets(mc_prepared, data):
    layout = mc_prepared.layout
    n = layout.n_tokens
    sets = {atom: set(layout.positions(atom).tolist()) for atom in ATOMS}
    # The atoms themselves, against independent definitions.
    assert sets["pos[0, 3, 5]"] == {0, 3, 5} and sets["pos[-2]"] == {n - 2}
    assert sets["pos[10:20]"] == set(range(10, 20)) and sets["pos[:4]"] == set(range(4)) and sets["pos[-5:]"] == set(range(n - 5, n))
    assert sets["text"] == sets["all"] - sets["video"]
    text, expected = data.draw(expressions(n))
    got = layout.positions(text)
    assert got.tolist() == sorted(expected(sets)), text
    # Laws that hold on any layout.
    assert set(layout.positions(f"~({text})").tolist()) == set(range(n)) - expected(sets)
    assert layout.positions(f"({text}) | ~({text})").tolist() == list(range(n))


def test_selector_operators_read_like_the_docs(mc_prepared):
    layout = mc_prepared.layout
    p = lambda s: set(layout.positions(s).tolist())  # noqa: E731
    assert p("video | question") == p("video") | p("question") == p("video + question")
    assert p("all - video") == p("text") == p("~video") == p("not video")
    assert p("all-video") == p("text")
    assert p("question - option[A] - option[B] - option[C]") >= p("question_without_options")
    assert p("not (video | last)") == set(range(layout.n_tokens)) - p("video") - p("last")
    assert p("video - video") == set()
    assert p("frame[0:2] & frame[1:3]") == p("frame[1]")


@pytest.mark.parametrize(
    ("selector", "match"),
    [
        ("questoin", r"unknown selector 'questoin' \(did you mean 'question'\?\)"),
        (3, r"must be a (non-empty selector )?string such as 'video'.*got (int )?3"),
        (None, r"got (NoneType )?None"),
        ("frame[99]", r"frame\[99\] is out of range: this input has 4 frames"),
        ("frame[x]", r"write frame\[i\] or frame\[a:b\]"),
        ("pos[999]", r"position 999 is out of range: this input has \d+ tokens"),
        ("pos[a]", r"write pos\[i, j, \.\.\.\] or pos\[a:b\]"),
        ("video |", r"ends too early"),
        ("(video", r"ends too early|missing '\)'"),
        ("video )", r"unexpected '\)'"),
        ("| video", r"'\|' needs a selector before it"),
        ("video $ last", r"cannot read selector"),
        ("", r"empty selector|non-empty selector string"),
    ],
)
def test_a_bad_selector_raises_selector_error_from_every_function(model, mc_prepared, selector, match):
    """knockout, patching, attention maps and positions: one exception type, one line."""
    layout = mc_prepared.layout
    n_layers = model.cfg.n_layers
    _, cache = model.run_with_cache(mc_prepared.tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))
    calls = {
        "positions": lambda: layout.positions(selector),
        "knockout source": lambda: knockout_hooks(KnockoutSpec.of([(selector, "last")], layers=[0]), layout, n_layers),
        "knockout target": lambda: knockout_hooks(KnockoutSpec.of([("video", selector)], layers=[0]), layout, n_layers),
        "patching": lambda: patch_groups(model, mc_prepared, mc_prepared, cache, mean_of(lambda logits: logits[:, -1, 0]),
                                         [selector], progress=False),
        "attention map": lambda: video_attention_map(model, mc_prepared, selector, layers=[0]),
    }
    for name, call in calls.items():
        with pytest.raises(SelectorError, match=match) as caught:
            call()
        assert "\n" not in str(caught.value), name
        assert isinstance(caught.value, (KeyError, IndexError, ValueError))


def test_valid_selectors_are_named_once(mc_prepared):
    with pytest.raises(SelectorError) as caught:
        mc_prepared.layout.positions("nonsense")
    listed = str(caught.value).split("valid: ")[1].split(";")[0].split(", ")
    assert len(listed) == len(set(listed)), [name for name in listed if listed.count(name) > 1]
    for name in ["all", "last", "video", "text", "question", "option[A]", "true_option", "false_options", "answer_prompt"]:
        assert name in listed
