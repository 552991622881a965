"""The bounded video bank: amortised registration, scopes that free what they registered, and
study pipelines that never hold more than one example's videos."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tl_video
from tests.conftest import random_video
from tl_video.model.video_bank import VideoBank, VideoIdError


def _register(bank: VideoBank, n_tokens: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(n_tokens, bank.d_model, generator=generator)
    grid = torch.stack([torch.arange(n_tokens), torch.zeros(n_tokens, dtype=torch.long), torch.arange(n_tokens)], 1)
    entry = bank.register(embeddings, grid, extras={"probe": embeddings[:, :2] * 2})
    return entry, embeddings


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["register", "open", "close"]), st.integers(1, 7)), max_size=40))
def test_live_videos_read_back_exactly_and_freed_ones_are_stale(operations):
    """Any interleaving of registrations and nested scopes: live ids read their own rows, freed ids raise."""
    bank = VideoBank(d_vocab=100, d_model=4, dtype=torch.float32)
    scopes, live, freed = [], {}, []
    for step, (operation, n_tokens) in enumerate(operations):
        if operation == "register":
            entry, embeddings = _register(bank, n_tokens, step)
            live[entry.first_id] = (entry, embeddings)
        elif operation == "open":
            context = bank.scope()
            context.__enter__()
            scopes.append((context, set(live)))
        elif scopes:
            context, before = scopes.pop()
            context.__exit__(None, None, None)
            for first_id in set(live) - before:
                freed.append(live.pop(first_id)[0])
    for entry, embeddings in live.values():
        assert torch.equal(bank.lookup(entry.token_ids), embeddings)
        assert torch.equal(bank.extras["probe"][bank.rows(entry.token_ids)], embeddings[:, :2] * 2)
        assert torch.equal(bank.grid[bank.rows(entry.token_ids)], entry.grid)
    assert len(bank) == sum(entry.n_tokens for entry, _ in live.values())
    for entry in freed:
        with pytest.raises(VideoIdError, match="scope"):
            bank.lookup(entry.token_ids[:1])


def test_registration_grows_storage_geometrically():
    """1,000 registrations reallocate the buffers O(log n) times, not once per video."""
    bank = VideoBank(d_vocab=100, d_model=8, dtype=torch.float32)
    pointers = set()
    for seed in range(1000):
        _register(bank, 50, seed)
        pointers.add(bank.embeddings.data_ptr())
    assert len(bank) == 50_000
    assert len(pointers) <= 10
    assert bank.nbytes < 2 * (50_000 * (8 + 2) * 4 + 50_000 * 4 * 8)  # spare capacity at most doubles it


def test_videos_from_before_a_scope_stay_exact_after_it(tiny_checkpoint):
    model = tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint)
    kept = model.prepare(video=random_video(1), prompt="What happens?")
    with torch.no_grad():
        expected = model(kept.tokens)
    with model.video_bank.scope():
        inner = [model.prepare(video=random_video(seed), prompt="What happens?") for seed in (2, 5)]
    later = model.prepare(video=random_video(6), prompt="What happens?")  # fills the freed rows
    with torch.no_grad():
        assert torch.equal(model(kept.tokens), expected)
        model(later.tokens)
    for prepared in inner:
        with pytest.raises(VideoIdError, match=r"end of the video_bank.scope\(\)"):
            model(prepared.tokens)
    assert len(model.video_bank) == len(kept.layout.video_positions) + len(later.layout.video_positions)


def test_a_video_prepared_before_the_scope_survives_it(tiny_checkpoint):
    model = tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint)
    outside = model.prepare(video=random_video(3), prompt="What happens?")
    with model.video_bank.scope():
        again = model.prepare(video=random_video(3), prompt="What happens?")  # same content: reused ids
        inside = model.prepare(video=random_video(4), prompt="What happens?")
    assert torch.equal(again.tokens, outside.tokens)
    with torch.no_grad():
        model(outside.tokens)
    with pytest.raises(VideoIdError):
        model(inside.tokens)


def test_study_pipelines_hold_one_example_at_a_time(study_examples):
    """run_flow and run_patching (which also prepares a corrupted copy per corruption) leave the bank as
    they found it, and no forward during them sees more than one example's clean and corrupted videos."""
    from tl_video.analyses import FlowOptions, PatchingOptions, run_flow, run_patching

    model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")  # its own, empty bank
    sizes = []
    model.add_hook("hook_embed", lambda value, hook: sizes.append(len(model.video_bank)))
    try:
        run_flow(model, study_examples[:3], FlowOptions(presets=("vql-to-ql",), layers=(1,)), progress=False)
        run_patching(model, study_examples[:3], PatchingOptions(layers=(0,)), progress=False)
    finally:
        model.reset_hooks()
    one_video = sizes[0]  # the first forward scores the first example: its video alone
    videos_per_example = 1 + len(PatchingOptions().corruptions)
    assert len(model.video_bank) == 0
    assert one_video > 0 and max(sizes) <= videos_per_example * one_video
