"""Parity with the HF VideoLLaMA3 model on the same video input, token pruning included.

The processor writes `Time {t:.1f}s:<|video_pad|>*n_i` per frame (joined by commas) and drops the
merged tokens of frames 1..T-1 whose pixels barely change (`video_compression_mask`). The test
videos are 36x48 (no resize: 3x4 merged tokens of 12x12 pixels per frame) and partly static, so
pruning removes a known set of tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tl_video
from tests.conftest import random_video
from tests.oracles import max_diff
from tests.parity import (
    PROMPT, assert_greedy_matches_hf, assert_half_precision_matches_hf, assert_matches_hf, load_pair,
    prepare_with_reference,
)
from tests.tolerances import EXACT, LOGITS_FP32
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_videollama3

VARIANTS = {
    "pruning": {},  # the HF default: use_token_compression=True
    "tied_no_pruning": {"tie_word_embeddings": True, "use_token_compression": False},
    "wide_heads": {"head_dim": 32},  # Qwen2 with an explicit head_dim: heads x head_dim = 2 x hidden size
}
TOKEN = 12  # pixels per merged token side (patch 6 x merge 2)
PER_FRAME = 12  # 3 x 4 merged tokens


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("videollama3")
    return {name: save_tiny_videollama3(root / name, **options) for name, options in VARIANTS.items()}


def partly_static(seed: int, changes: dict[int, list[tuple[int, int]]]) -> np.ndarray:
    """4 frames of one random image; from frame t on, each listed merged token (row, col) gets new pixels."""
    video = np.repeat(random_video(seed, frames=1, height=3 * TOKEN, width=4 * TOKEN), 4, axis=0)
    noise = random_video(seed + 1000, frames=4, height=3 * TOKEN, width=4 * TOKEN)
    for frame, cells in changes.items():
        for row, col in cells:
            block = np.s_[row * TOKEN : (row + 1) * TOKEN, col * TOKEN : (col + 1) * TOKEN]
            video[frame:][(slice(None), *block)] = noise[frame][block]
    return video


# Frame 1 changes 3 tokens, frame 2 one, frame 3 none (keeps its first token): 12 + 3 + 1 + 1 = 17.
PRUNED_VIDEO_CHANGES = {1: [(0, 0), (1, 2), (2, 3)], 2: [(1, 1)]}
PRUNED_VIDEO_KEPT = [(f, r, c) for f in [0] for r in range(3) for c in range(4)] + [
    (1, 0, 0), (1, 1, 2), (1, 2, 3), (2, 1, 1), (3, 0, 0)
]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_residuals_and_patterns_match_hf(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    prepared, processed = prepare_with_reference(model, processor, partly_static(1, PRUNED_VIDEO_CHANGES))
    expected_tokens = len(PRUNED_VIDEO_KEPT) if VARIANTS[variant].get("use_token_compression", True) else 4 * PER_FRAME
    assert len(prepared.layout.video_positions) == expected_tokens
    assert_matches_hf(model, hf, prepared, processed, where=f"videollama3 {variant}")


def test_video_tokens_equal_what_hf_splices_in(checkpoints):
    model, hf, processor = load_pair(checkpoints["pruning"])
    prepared, processed = prepare_with_reference(model, processor, partly_static(2, PRUNED_VIDEO_CHANGES))
    with torch.no_grad():
        features = hf.get_video_features(
            processed["pixel_values_videos"], processed["video_grid_thw"], video_merge_sizes=processed["video_merge_sizes"]
        ).pooler_output
        spliced = hf(**processed, output_hidden_states=True).hidden_states[0][0]  # inputs_embeds after the scatter
        _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
    ours = cache["hook_video_embed"][0]
    kept = torch.cat(features)[processed["video_compression_mask"]]
    placeholders = processed["input_ids"][0] == hf.config.video_token_id
    assert ours.shape[0] == len(PRUNED_VIDEO_KEPT) < 4 * PER_FRAME
    assert max_diff(ours, kept) == EXACT
    assert max_diff(ours, spliced[placeholders]) == EXACT


@pytest.mark.parametrize("variant", ["pruning", "tied_no_pruning"])
def test_greedy_generation_matches_hf(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    assert_greedy_matches_hf(model, hf, *prepare_with_reference(model, processor, partly_static(3, PRUNED_VIDEO_CHANGES)))


def test_layout_marks_exactly_the_kept_tokens(checkpoints):
    """Grid and frame spans rebuilt from the processor's ids and compression mask alone."""
    model, hf, processor = load_pair(checkpoints["pruning"])
    question, options = "Which part of the picture changes?", ["top left", "bottom right", "nothing"]
    frames = partly_static(4, PRUNED_VIDEO_CHANGES)
    prepared = model.prepare(video=frames, prompt=multiple_choice_prompt(question, options, 0), answer_prefix="Best option:(")
    processed = processor(text=prepared.text, videos=[frames], return_tensors="pt")
    ids = processed["input_ids"][0].tolist()
    video_id = hf.config.video_token_id
    positions = [i for i, token in enumerate(ids) if token == video_id]
    runs = np.split(np.array(positions), np.nonzero(np.diff(positions) > 1)[0] + 1)  # one run per frame
    full = [(f, r, c) for f in range(4) for r in range(3) for c in range(4)]
    kept = [cell for cell, keep in zip(full, processed["video_compression_mask"].tolist()) if keep]
    layout = prepared.layout

    assert kept == PRUNED_VIDEO_KEPT
    assert list(layout.video_grid) == kept
    assert list(layout.video_positions) == positions
    assert [len(run) for run in runs] == [12, 3, 1, 1]
    encode = lambda text: model.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    for frame, run in enumerate(runs):
        assert layout.positions(f"frame[{frame}] & video_tokens").tolist() == run.tolist()  # frame[i] adds its timestamp
        stamp = encode(f"Time {frame:.1f}s:")  # 1 fps without metadata
        assert ids[run[0] - len(stamp) : run[0]] == stamp, f"no timestamp before frame {frame}"
    decode = lambda name: model.to_string(prepared.tokens[0, layout.positions(name)])  # noqa: E731
    assert decode("question_without_options") == question
    assert [decode(f"option[{letter}]") for letter in "ABC"] == ["(A) top left", "(B) bottom right", "(C) nothing"]
    assert decode("true_option") == "(A) top left"


def test_pairs_whose_kept_tokens_differ_are_refused(checkpoints):
    model = tl_video.HookedVideoTransformer.from_pretrained(checkpoints["pruning"])
    clean = model.prepare(video=partly_static(5, PRUNED_VIDEO_CHANGES), prompt=PROMPT)
    # Same number of kept tokens per frame, other cells: same length, different (frame, row, col).
    moved = model.prepare(video=partly_static(5, {1: [(0, 1), (1, 3), (2, 0)], 2: [(2, 2)]}), prompt=PROMPT)
    frozen = model.prepare(video=partly_static(5, {}), prompt=PROMPT)  # 12 + 1 + 1 + 1 tokens
    assert moved.layout.n_tokens == clean.layout.n_tokens
    with pytest.raises(ValueError, match=r"layouts differ in their video tokens"):
        clean.layout.check_same_as(moved.layout)
    with pytest.raises(ValueError, match="layouts differ"):
        clean.layout.check_same_as(frozen.layout)
    # The same changes on other pixels keep the same tokens: such a pair is accepted.
    other = model.prepare(video=partly_static(6, PRUNED_VIDEO_CHANGES), prompt=PROMPT)
    clean.layout.check_same_as(other.layout)


def test_pruning_switch_keeps_every_token_and_parity(checkpoints):
    model, hf, processor = load_pair(checkpoints["pruning"])
    video = partly_static(7, {})
    assert model.frontend.token_pruning
    pruned = model.prepare(video=video, prompt=PROMPT)
    model.frontend.token_pruning = False
    full, processed = prepare_with_reference(model, processor, video, use_token_compression=False)  # HF's switch
    assert len(pruned.layout.video_positions) == PER_FRAME + 3
    assert list(full.layout.video_grid) == [(f, r, c) for f in range(4) for r in range(3) for c in range(4)]
    with torch.no_grad():
        reference = hf(**processed).logits
        ours = model(full.tokens)
    assert max_diff(ours, reference) <= LOGITS_FP32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_as_close_to_hf_float32_as_hf_itself(checkpoints, dtype):
    videos = {f"video seed {seed}": partly_static(seed, PRUNED_VIDEO_CHANGES) for seed in (8, 9)}
    assert_half_precision_matches_hf(checkpoints["pruning"], dtype, videos)
