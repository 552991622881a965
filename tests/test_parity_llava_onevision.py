"""Parity with the HF LLaVA-OneVision model (SigLIP, bilinear pooling, newline, Qwen2 LM).

The reference is HF alone, fed from the raw inputs (the frames array and the prompt as written,
through the checkpoint's own processor and chat template; tests/oracles.py).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import tl_video
from tests.conftest import random_video
from tests.oracles import max_diff, reference_model
from tests.parity import assert_greedy_matches_hf, assert_matches_hf, load_pair, prepare_with_reference
from tl_video.loading import CheckpointError
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_llava_onevision

# name -> builder options. The default frame is a 5x5 SigLIP grid resized to 3x3 (odd on purpose);
# "even_grid" is 4x4 -> 2x2, where the bilinear resize is an exact 2x2 average.
VARIANTS = {
    "plain": {},
    "tied": {"tie_word_embeddings": True},
    "even_grid": {"image_size": 24},
    # llava-onevision-qwen2-0.5b-ov-hf: tied; a released config's unused sliding_window (here 16 tokens,
    # max_window_layers 1, use_sliding_window false); heads x head_dim = 2 x hidden size
    "wide_heads_tied_unused_window": {
        "head_dim": 32, "tie_word_embeddings": True, "text_fields": {"sliding_window": 16, "max_window_layers": 1},
    },
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava_onevision")
    return {name: save_tiny_llava_onevision(root / name, **options) for name, options in VARIANTS.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_residuals_and_patterns_match_hf(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    prepared, processed = prepare_with_reference(model, processor, random_video(11))
    assert_matches_hf(model, hf, prepared, processed, where=f"llava_onevision {variant}")


@pytest.mark.parametrize("variant", ["plain", "even_grid"])
def test_video_tokens_equal_hf_video_features_newline_included(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    prepared, inputs = prepare_with_reference(model, processor, random_video(12))
    with torch.no_grad():
        expected = hf.get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"]
        ).pooler_output.flatten(0, 1)
    _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
    assert cache["hook_video_embed"][0].shape == expected.shape
    assert max_diff(cache["hook_video_embed"][0], expected) == 0.0
    assert torch.equal(cache["hook_video_embed"][0, -1], hf.model.image_newline)  # the last video row


def test_qwen2_biases_are_configured_and_converted(checkpoints):
    model = tl_video.HookedVideoTransformer.from_pretrained(checkpoints["plain"])
    hf = reference_model(checkpoints["plain"])
    assert model.cfg.attn_qkv_bias and not model.cfg.attn_out_bias and not model.cfg.mlp_bias
    assert model.cfg.n_key_value_heads == 2 and model.cfg.n_heads == 4
    attention = hf.model.language_model.layers[1].self_attn
    assert attention.o_proj.bias is None
    assert torch.equal(model.blocks[1].attn.b_Q.flatten(), attention.q_proj.bias)
    assert torch.equal(model.blocks[1].attn._b_K.flatten(), attention.k_proj.bias)
    assert torch.equal(model.blocks[1].attn._b_V.flatten(), attention.v_proj.bias)
    assert torch.count_nonzero(model.blocks[1].attn.b_O) == 0


@pytest.mark.parametrize("variant", ["plain", "tied"])
def test_greedy_generation_matches_hf(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    assert_greedy_matches_hf(model, hf, *prepare_with_reference(model, processor, random_video(13)))


def test_layout_matches_an_independent_reconstruction(checkpoints):
    """Video rows, frames and the newline's grid entry rebuilt from the processor's ids alone."""
    model, hf, processor = load_pair(checkpoints["plain"])
    question, options = "Which way does the ball roll?", ["left", "right", "it stays"]
    frames = random_video(14, frames=3)
    prepared = model.prepare(video=frames, prompt=multiple_choice_prompt(question, options, 0), answer_prefix="Best option:(")
    ids = processor(text=prepared.text, videos=[frames], return_tensors="pt")["input_ids"][0].tolist()
    replaced = [i for i, token in enumerate(ids) if token == hf.config.video_token_id]  # rows HF scatters into
    grid_side = hf.config.vision_config.image_size // hf.config.vision_config.patch_size
    side = math.ceil(grid_side / 2)
    per_frame = side * side
    assert len(replaced) == 3 * per_frame + 1
    layout = prepared.layout
    assert layout.positions("video").tolist() == replaced
    assert layout.n_frames == 3
    for frame in range(3):
        expected = replaced[frame * per_frame : (frame + 1) * per_frame]
        if frame == 2:
            expected = expected + [replaced[-1]]  # the newline ends the last frame
        assert layout.positions(f"frame[{frame}]").tolist() == expected
    expected_grid = [(f, r, c) for f in range(3) for r in range(side) for c in range(side)] + [(2, side, 0)]
    assert list(layout.video_grid) == expected_grid
    assert model.to_str_tokens(prepared.tokens[0, replaced[-1]: replaced[-1] + 1]) == [f"<video f2 r{side} c0>"]
    # text around the video is the processor's, token for token
    for position, token in enumerate(ids):
        if position not in replaced:
            assert int(prepared.tokens[0, position]) == token
    encode = lambda text: model.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    decode = lambda name: model.to_string(prepared.tokens[0, layout.positions(name)])  # noqa: E731
    assert layout.positions("question_without_options").numel() == len(encode(question))
    assert decode("question_without_options") == question
    assert decode("true_option") == "(A) left"
    assert decode("option[C]") == "(C) it stays"
    assert set(layout.positions("question").tolist()) >= set(layout.positions("false_options").tolist())
    assert decode("answer_prompt") == "Best option:("
    assert layout.positions("last").tolist() == [len(ids) - 1]


def test_sliding_window_checkpoint_is_refused(checkpoints, tmp_path):
    import shutil

    folder = shutil.copytree(checkpoints["plain"], tmp_path / "sliding")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(use_sliding_window=True, sliding_window=16, max_window_layers=1,
                                 layer_types=["full_attention", "sliding_attention"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"sliding-window attention in layers \[1\]"):
        tl_video.HookedVideoTransformer.from_pretrained(folder)
    # A window no shorter than the context never masks anything: accepted.
    config["text_config"]["sliding_window"] = config["text_config"]["max_position_embeddings"]
    (folder / "config.json").write_text(json.dumps(config))
    assert tl_video.HookedVideoTransformer.from_pretrained(folder).cfg.n_layers == 2
