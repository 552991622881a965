"""The token layout: checked against an independent reconstruction, and its properties under corruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_video.prompts import multiple_choice_prompt
from tl_video.prompts.layout import TokenLayout
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
