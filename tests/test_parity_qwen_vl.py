"""Parity with HF Qwen2.5-VL and Qwen3-VL, and their token layouts.

The reference is HF alone, fed from the raw inputs (the frames array and the prompt as written,
through the checkpoint's own processor and chat template; tests/oracles.py), with the processor
options a user passes for pre-decoded frames (Qwen3-VL: `do_sample_frames=False`; real timing:
`video_metadata`).

Positions: at the processor's default timing (no `video_metadata`: 2/24 s per tubelet) HF
transformers 5.24 computes the reference M-RoPE positions itself, so it runs unassisted. For a slow
Qwen2.5-VL clip (0.5 fps: 4 s per tubelet) its `get_rope_index` starts the text after the video
too early (docs/families.md §4), so there, and only there, HF gets `position_ids` explicitly, built by
`reference_positions` (tests/test_mrope_positions.py) from the processor's own outputs, and greedy
generation is an HF argmax loop with those positions instead of `hf.generate`.

DeepStack (Qwen3-VL): HF's `hidden_states[l + 1]` is recorded before feature set l is added, so our
`resid_pre` of layer l + 1 is compared with `hidden_states[l + 1] + deepstack[l]` at video rows.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import tl_video
from tl_video.loading import CheckpointError
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_qwen2_5_vl, save_tiny_qwen3_vl
from tests.conftest import random_video
from tests.test_mrope_positions import SPLIT_TUBELETS, processor_kwargs, reference_positions, use_frame_rate
from tests.oracles import assert_same_prompt, hf_chat_inputs, max_diff, reference_model, reference_processor
from tests.parity import PROMPT, assert_greedy_matches_hf, assert_half_precision_matches_hf, assert_matches_hf
from tests.tolerances import EXACT
FAMILIES = ["qwen2_5_vl", "qwen3_vl"]
# Released shapes and config layouts (parity at default timing): Qwen2.5-VL-3B's tied
# embeddings in the flat 4.x config.json (legacy rope keys, an unused sliding window); Qwen3-VL-4B's
# tied embeddings and heads x head_dim != hidden size (6 heads of 16 over 64, not even a divisor).
RELEASED = {
    "qwen2_5_vl_released": (save_tiny_qwen2_5_vl, {"tie_word_embeddings": True, "released_layout": True}),
    "qwen3_vl_4b_shape": (save_tiny_qwen3_vl, {
        "num_attention_heads": 6, "head_dim": 16, "tie_word_embeddings": True, "released_layout": True,
    }),
}
CASES = [("qwen2_5_vl", None), ("qwen2_5_vl", 0.5), ("qwen3_vl", None), ("qwen3_vl", 0.5)]
# (family, fps) where transformers 5.24's own positions deviate from the reference (4 s tubelets:
# the video's t positions reach past max(h, w) / 2, see the module docstring).
HF_POSITIONS_DEVIATE = {("qwen2_5_vl", 0.5)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen_parity")
    folders = {"qwen2_5_vl": save_tiny_qwen2_5_vl(root / "qwen2_5_vl"), "qwen3_vl": save_tiny_qwen3_vl(root / "qwen3_vl")}
    return folders | {name: build(root / name, **options) for name, (build, options) in RELEASED.items()}


@pytest.fixture(scope="module")
def pairs(folders):
    """family -> (ours, HF reference model, HF reference processor), each loaded on its own."""
    return {
        name: (tl_video.HookedVideoTransformer.from_pretrained(folder), reference_model(folder), reference_processor(folder))
        for name, folder in folders.items()
    }


def hf_inputs(model, hf, processor, frames, fps):
    """HF's inputs from the raw frames and prompt; explicit reference positions where HF deviates."""
    processed = hf_chat_inputs(processor, frames, PROMPT, **processor_kwargs(model, len(frames), fps))
    if (model.cfg.family, fps) in HF_POSITIONS_DEVIATE:
        processed["position_ids"] = reference_positions_of(hf, processed)[:, None]
    return processed


def prepare_with_reference(model, hf, processor, frames, fps):
    processed = hf_inputs(model, hf, processor, frames, fps)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    assert_same_prompt(prepared.tokens, processed["input_ids"], model.frontend.video_token_id)
    return prepared, processed


def reference_positions_of(hf, processed) -> torch.Tensor:
    vision_config = hf.config.vision_config
    family = "qwen3_vl" if "Qwen3" in type(hf).__name__ else "qwen2_5_vl"
    return reference_positions(
        processed["mm_token_type_ids"][0], processed["video_grid_thw"], processed.get("second_per_grid_ts"),
        getattr(vision_config, "tokens_per_second", 1.0), SPLIT_TUBELETS[family],
    )


def hf_deepstack(hf, processed) -> list[torch.Tensor]:
    """HF's DeepStack feature sets, each [n_video_tokens, d_model] (empty for Qwen2.5-VL)."""
    with torch.no_grad():
        output = hf.model.get_video_features(processed["pixel_values_videos"], processed["video_grid_thw"])
    return [torch.cat(list(level)) for level in getattr(output, "deepstack_features", None) or []]


@pytest.mark.parametrize("family,fps", CASES + [(name, None) for name in RELEASED])
def test_logits_residuals_and_patterns_match_hf(pairs, monkeypatch, family, fps):
    model, hf, processor = pairs[family]
    if fps is not None:
        use_frame_rate(monkeypatch, model, fps)
    prepared, processed = prepare_with_reference(model, hf, processor, random_video(1), fps)
    is_video = processed["input_ids"][0] == model.frontend.video_token_id
    deepstack = hf_deepstack(hf, processed)

    def with_deepstack(layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """HF records layer l - 1's output before its DeepStack addition."""
        if not 0 < layer <= len(deepstack):
            return hidden
        expected = hidden.clone()
        expected[0, is_video] += deepstack[layer - 1]
        return expected

    assert_matches_hf(model, hf, prepared, processed, where=f"{family} at {fps} fps", expected_resid_pre=with_deepstack)


def test_released_shapes_are_what_they_claim(pairs, folders):
    model, hf, _ = pairs["qwen3_vl_4b_shape"]
    assert (model.cfg.n_heads, model.cfg.d_head, model.cfg.d_model) == (6, 16, 64)
    assert hf.lm_head.weight is hf.get_input_embeddings().weight
    assert torch.equal(model.W_U, model.W_E.T)
    config = json.loads((folders["qwen2_5_vl_released"] / "config.json").read_text())
    assert "text_config" not in config and config["rope_scaling"]["type"] == "mrope" and config["sliding_window"] == 16
    model = pairs["qwen2_5_vl_released"][0]
    assert model.cfg.mrope_section == (2, 3, 3) and model.cfg.rope_parameters == {"rope_type": "default", "rope_theta": 1e6}


def test_qwen2_5_vl_head_dim_other_than_hidden_over_heads_is_refused(folders, tmp_path):
    """HF's Qwen2.5-VL attention derives hidden / heads while its rotary embedding reads head_dim."""
    folder = shutil.copytree(folders["qwen2_5_vl"], tmp_path / "head_dim")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["head_dim"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"head_dim=32.*hidden_size / num_attention_heads = 16"):
        tl_video.HookedVideoTransformer.from_pretrained(folder)


def test_qwen_vl_sliding_window_in_use_is_refused(folders, tmp_path):
    folder = shutil.copytree(folders["qwen2_5_vl"], tmp_path / "sliding")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(use_sliding_window=True, sliding_window=16, max_window_layers=1,
                                 layer_types=["full_attention", "sliding_attention"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"sliding-window attention in layers \[1\]"):
        tl_video.HookedVideoTransformer.from_pretrained(folder)


@pytest.mark.parametrize("family", FAMILIES)
def test_video_tokens_and_deepstack_features_equal_hf(pairs, family):
    model, hf, processor = pairs[family]
    prepared, processed = prepare_with_reference(model, hf, processor, random_video(2), None)
    with torch.no_grad():
        expected = torch.cat(list(hf.get_video_features(
            pixel_values_videos=processed["pixel_values_videos"], video_grid_thw=processed["video_grid_thw"]
        ).pooler_output))
        _, cache = model.run_with_cache(prepared.tokens, names_filter=lambda name: "video" in name)
    assert max_diff(cache["hook_video_embed"][0], expected) <= EXACT
    deepstack = hf_deepstack(hf, processed)
    assert len(deepstack) == (3 if family == "qwen3_vl" else 0)
    for level, features in enumerate(deepstack):
        assert max_diff(cache[f"blocks.{level}.hook_video_injection"][0], features) <= EXACT


def test_editing_the_deepstack_injection_changes_the_logits(pairs):
    model = pairs["qwen3_vl"][0]
    prepared = model.prepare(video=random_video(3), prompt=PROMPT)
    with torch.no_grad():
        baseline = model(prepared.tokens)
        zeroed = model.run_with_hooks(
            prepared.tokens, fwd_hooks=[("blocks.1.hook_video_injection", lambda features, hook: features * 0)]
        )
    assert max_diff(baseline, zeroed) > 1e-3


def hf_greedy_with_positions(hf, processed, max_new_tokens: int) -> list[int]:
    """HF's argmax loop, recomputing the whole sequence with explicit reference positions each step."""
    inputs = {k: v for k, v in processed.items() if k not in ("position_ids", "pixel_values_videos")}
    with torch.no_grad():  # the vision tower once, as HF's own `mm_encoder_outputs` input allows
        inputs["mm_encoder_outputs"] = {"video": hf.model.get_video_features(
            processed["pixel_values_videos"], processed["video_grid_thw"], return_dict=True
        )}
    new_tokens = []
    for _ in range(max_new_tokens):
        inputs["position_ids"] = reference_positions_of(hf, inputs)[:, None]
        with torch.no_grad():
            token = hf(**inputs).logits[0, -1].argmax()
        new_tokens.append(int(token))
        for name in ("input_ids", "mm_token_type_ids", "attention_mask"):
            value = token if name == "input_ids" else (0 if name == "mm_token_type_ids" else 1)
            inputs[name] = torch.cat([inputs[name], torch.full((1, 1), int(value), dtype=inputs[name].dtype)], dim=1)
    return new_tokens


@pytest.mark.parametrize("family,fps", CASES)
def test_greedy_generation_matches_hf(pairs, monkeypatch, family, fps):
    model, hf, processor = pairs[family]
    if fps is not None:
        use_frame_rate(monkeypatch, model, fps)
    prepared, processed = prepare_with_reference(model, hf, processor, random_video(4), fps)
    if (family, fps) not in HF_POSITIONS_DEVIATE:
        assert_greedy_matches_hf(model, hf, prepared, processed)
        return
    expected = hf_greedy_with_positions(hf, processed, 8)
    ours = model.generate(prepared.tokens, max_new_tokens=8, stop_at_eos=False)
    assert ours[0, prepared.tokens.shape[1]:].tolist() == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_matches_an_independent_reconstruction(pairs, family):
    """Video positions, per-tubelet spans and (tubelet, row, col) rebuilt from the processor's ids.

    8 frames: 4 tubelets (Qwen3-VL's processor would keep only 4 frames, i.e. 2 tubelets, if the
    front end did not turn its frame sampling off). Qwen3-VL puts timestamp text between tubelets.
    """
    model, _, processor = pairs[family]
    prepared = model.prepare(video=random_video(5, frames=8), prompt=PROMPT)
    processed = processor(
        text=prepared.text, videos=[prepared.frames], return_tensors="pt", **processor_kwargs(model, 8, None)
    )
    ids = processed["input_ids"][0].tolist()
    video_positions = [i for i, token in enumerate(ids) if token == model.frontend.video_token_id]
    t, h, w = processed["video_grid_thw"][0].tolist()
    per_tubelet = (h // 2) * (w // 2)
    layout = prepared.layout
    assert t == 4 and layout.n_frames == 4 and layout.frame_unit == "tubelet (2 frames)"
    assert list(layout.video_positions) == video_positions
    for tubelet in range(t):
        expected = video_positions[tubelet * per_tubelet : (tubelet + 1) * per_tubelet]
        assert layout.positions(f"frame[{tubelet}]").tolist() == expected
        assert expected == list(range(expected[0], expected[0] + per_tubelet)), "a tubelet's tokens are contiguous"
    between = [
        model.tokenizer.decode(ids[video_positions[k * per_tubelet - 1] + 1 : video_positions[k * per_tubelet]])
        for k in range(1, t)
    ]
    if family == "qwen2_5_vl":
        assert between == [""] * (t - 1)
    else:
        assert all(text.startswith("<|vision_end|><") and text.endswith(" seconds><|vision_start|>") for text in between), between
    assert list(layout.video_grid) == [(f, r, c) for f in range(t) for r in range(h // 2) for c in range(w // 2)]


@pytest.mark.parametrize("family", FAMILIES)
def test_multiple_choice_prompt_yields_question_and_option_segments(pairs, family):
    model = pairs[family][0]
    question, options = "Where did the red ball roll?", ["under the bed", "out the door", "nowhere"]
    prepared = model.prepare(
        video=random_video(6), prompt=multiple_choice_prompt(question, options, 1), answer_prefix="Best option:("
    )
    layout = prepared.layout

    def text_of(selector: str) -> str:
        return model.to_string(prepared.tokens[0, layout.positions(selector)])

    assert text_of("question_without_options") == question
    assert text_of("option[B]") == text_of("true_option") == "(B) out the door"
    assert text_of("answer_prompt") == "Best option:("
    video = set(layout.positions("video").tolist())
    question_span = layout.segments["question"]
    assert video.isdisjoint(range(question_span.start, question_span.end))
    assert question_span.start >= layout.segments["video"].end


def test_random_videos_of_odd_length_pad_the_last_tubelet(pairs):
    """5 frames become 3 tubelets (the processor repeats the last frame)."""
    model = pairs["qwen2_5_vl"][0]
    frames = np.concatenate([random_video(7), random_video(8, frames=1)])
    assert model.prepare(video=frames, prompt=PROMPT).layout.n_frames == 3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", FAMILIES)
def test_half_precision_is_as_close_to_hf_float32_as_hf_itself(folders, pairs, family, dtype):
    """Video tokens, DeepStack features and positions survive a half-precision load (two videos)."""
    hf_fp32 = pairs[family][1]
    videos = {f"{family}, video seed {seed}": random_video(seed) for seed in (9, 10)}
    assert_half_precision_matches_hf(
        folders[family], dtype, videos,
        prepare=lambda model, processor, frames: prepare_with_reference(model, hf_fp32, processor, frames, None),
    )
