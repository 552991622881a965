"""Video ids are never reused: stale (freed) and foreign (another model's) video tokens are refused."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import random_video
from tl_video.model.video_bank import VideoBank, VideoIdError


@pytest.fixture(scope="module")
def own_model(model):
    """A copy of the session model whose bank this module may clear."""
    return copy.deepcopy(model)


def test_tokens_prepared_before_clear_are_refused_not_remapped(own_model):
    stale = own_model.prepare(video=random_video(40), prompt="What happens?")
    own_model.video_bank.clear()
    fresh = own_model.prepare(video=random_video(41), prompt="What happens?")
    for use in (own_model, own_model.to_str_tokens, own_model.to_string):
        with pytest.raises(VideoIdError, match=r"freed by video_bank.clear\(\).*prepare the input again"):
            use(stale.tokens)
    own_model(fresh.tokens)  # the new video's tokens still run


def test_ids_are_never_reused_after_clear(own_model):
    own_model.video_bank.clear()
    first = own_model.prepare(video=random_video(42), prompt="What happens?")
    ids_before = set(first.tokens[0, first.layout.video_positions].tolist())
    own_model.video_bank.clear()
    again = own_model.prepare(video=random_video(42), prompt="What happens?")  # same video, fresh ids
    ids_after = set(again.tokens[0, again.layout.video_positions].tolist())
    assert ids_before.isdisjoint(ids_after)


def test_tokens_of_another_model_are_refused(model, own_model):
    mine = own_model.prepare(video=random_video(43), prompt="What happens?")
    theirs = model.prepare(video=random_video(43), prompt="What happens?")  # same video, other bank
    assert not torch.equal(mine.tokens, theirs.tokens)
    with pytest.raises(VideoIdError, match="not in this model's video bank.*another model"):
        own_model(theirs.tokens)
    with pytest.raises(VideoIdError, match="another model"):
        model.to_str_tokens(mine.tokens)


def test_video_ids_are_far_above_any_vocabulary(model):
    prepared = model.prepare(video=random_video(44), prompt="What happens?")
    video_ids = prepared.tokens[0, prepared.layout.video_positions]
    assert int(video_ids.min()) >= 2**32 and int(video_ids.max()) < 2**53  # never a text id; exact as float64


def test_deepcopy_keeps_earlier_ids_and_separates_later_ones(model):
    before = model.prepare(video=random_video(45), prompt="What happens?")
    twin = copy.deepcopy(model)
    torch.testing.assert_close(twin(before.tokens), model(before.tokens))
    later = twin.prepare(video=random_video(46), prompt="What happens?")
    with pytest.raises(VideoIdError, match="another model"):
        model(later.tokens)


def test_bank_rows_must_carry_every_extra():
    bank = VideoBank(d_vocab=10, d_model=4, dtype=torch.float32)
    bank.register(torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.long), extras={"offsets": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"carry extras \['offsets'\] that this video lacks"):
        bank.register(torch.ones(2, 4), torch.zeros(2, 3, dtype=torch.long))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(1, 5), st.just("clear"), st.just("other")), min_size=1, max_size=12))
def test_bank_property_ids_unique_live_exact_freed_and_foreign_refused(operations):
    """Any register/clear sequence: ids unique; live ids give their own rows; freed and foreign ids raise."""
    bank, other = VideoBank(10, 2, torch.float32), VideoBank(10, 2, torch.float32)
    live: dict[int, float] = {}  # id -> the value its embedding row holds
    freed: set[int] = set()
    foreign: set[int] = set()
    handed_out: list[int] = []
    for step, op in enumerate(operations):
        if op == "clear":
            freed |= set(live)
            live.clear()
            bank.clear()
        elif op == "other":
            foreign |= set(other.register(torch.zeros(3, 2), torch.zeros(3, 3, dtype=torch.long)).token_ids.tolist())
        else:
            entry = bank.register(torch.full((op, 2), float(step)), torch.zeros(op, 3, dtype=torch.long))
            live.update({token: float(step) for token in entry.token_ids.tolist()})
            handed_out += entry.token_ids.tolist()
    assert len(handed_out) == len(set(handed_out))
    if live:
        ids = torch.tensor(sorted(live))
        assert bank.lookup(ids)[:, 0].tolist() == [live[token] for token in sorted(live)]
    for token in sorted(freed)[:3]:
        with pytest.raises(VideoIdError, match="freed"):
            bank.lookup(torch.tensor([token]))
    for token in sorted(foreign)[:3]:
        with pytest.raises(VideoIdError, match="another model"):
            bank.lookup(torch.tensor([token]))
