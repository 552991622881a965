"""Parity with the HF InternVL3 model on the same video input (frames encoded as images).

InternVL has no video path: the processor turns `<video>` into `Frame{i}: <img><IMG_CONTEXT>*16</img>`
per frame and the model fills the `<IMG_CONTEXT>` rows with `get_image_features(pixel_values)`.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import random_video
from tests.parity import load_pair, prepare_with_reference
from tests.oracles import assert_half_precision_close, max_diff, reference_model
from tests.tolerances import EXACT, LOGITS_FP32, PATTERN_FP32, RESIDUAL_FP32
from tl_video.frontend.internvl import pixel_shuffle
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_internvl
from tl_video.video import reverse

# name -> builder options; each a real saved InternVL checkpoint.
VARIANTS = {
    "qwen2": {},  # InternVL3: Qwen2.5 LM, q/k/v biases, untied
    "qwen2_tied_layer_-2": {"tie_word_embeddings": True, "vision_feature_layer": -2},
    "qwen3_bias": {"text_model_type": "qwen3", "attention_bias": True},  # InternVL3.5: q/k norm
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("internvl")
    return {name: save_tiny_internvl(root / name, **options) for name, options in VARIANTS.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_residuals_and_patterns_match_hf(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    prepared, processed = prepare_with_reference(model, processor, random_video(1))
    with torch.no_grad():
        reference = hf(**processed, output_hidden_states=True, output_attentions=True)
        logits, cache = model.run_with_cache(
            prepared.tokens, names_filter=lambda name: name.endswith(("hook_resid_pre", "hook_pattern", "hook_resid_post"))
        )

    assert max_diff(logits, reference.logits) <= LOGITS_FP32, f"{variant}: logits differ by {max_diff(logits, reference.logits):.2e}"
    for layer in range(model.cfg.n_layers):
        diff = max_diff(cache[f"blocks.{layer}.hook_resid_pre"], reference.hidden_states[layer])
        assert diff <= RESIDUAL_FP32, f"{variant}: resid_pre of layer {layer} differs by {diff:.2e}"
        diff = max_diff(cache[f"blocks.{layer}.attn.hook_pattern"], reference.attentions[layer])
        assert diff <= PATTERN_FP32, f"{variant}: pattern of layer {layer} differs by {diff:.2e}"
    final = model.ln_final(cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"])
    assert max_diff(final, reference.hidden_states[-1]) <= RESIDUAL_FP32


@pytest.mark.parametrize("variant", ["qwen2", "qwen2_tied_layer_-2"])
def test_video_tokens_equal_what_hf_splices_in(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    prepared, processed = prepare_with_reference(model, processor, random_video(2))
    with torch.no_grad():
        image_features = hf.get_image_features(pixel_values=processed["pixel_values"]).pooler_output
        spliced = hf(**processed, output_hidden_states=True).hidden_states[0][0]  # inputs_embeds after the scatter
        _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
    ours = cache["hook_video_embed"][0]
    placeholders = processed["input_ids"][0] == hf.config.image_token_id
    assert image_features.shape[:2] == (4, 16)
    assert max_diff(ours, image_features.flatten(0, 1)) == EXACT
    assert max_diff(ours, spliced[placeholders]) == EXACT


def test_pixel_shuffle_matches_hf(checkpoints):
    hf = reference_model(checkpoints["qwen2"])
    features = torch.randn(3, 8, 8, 5)
    expected = hf.model.pixel_shuffle(features, scale_factor=0.5)
    assert torch.equal(pixel_shuffle(features, 2), expected)
    # Output (i, j) holds patches (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1) in that order.
    block = torch.cat([features[0, 2, 4], features[0, 2, 5], features[0, 3, 4], features[0, 3, 5]])
    assert torch.equal(pixel_shuffle(features, 2)[0, 1, 2], block)


@pytest.mark.parametrize("variant", ["qwen2", "qwen3_bias"])
def test_greedy_generation_matches_hf(checkpoints, variant):
    model, hf, processor = load_pair(checkpoints[variant])
    prepared, processed = prepare_with_reference(model, processor, random_video(4))
    with torch.no_grad():
        expected = hf.generate(**processed, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    ours = model.generate(prepared.tokens, max_new_tokens=8, stop_at_eos=False)
    assert ours[0, prepared.tokens.shape[1]:].tolist() == expected[0, processed["input_ids"].shape[1]:].tolist()


def test_layout_matches_an_independent_reconstruction(checkpoints):
    """Frames are the `<img>...</img>` runs of the processor's ids; `Frame{i}: ` text sits between them."""
    model, hf, processor = load_pair(checkpoints["qwen2"])
    question, options = "Which way does the ball roll?", ["left", "right", "it stays"]
    frames = random_video(5)
    prepared = model.prepare(video=frames, prompt=multiple_choice_prompt(question, options, 2),
                             answer_prefix="Best option:(")
    ids = processor(text=prepared.text, videos=[frames], return_tensors="pt")["input_ids"][0].tolist()
    tokenizer = model.tokenizer
    start_id, end_id = tokenizer.convert_tokens_to_ids("<img>"), tokenizer.convert_tokens_to_ids("</img>")
    starts = [i for i, token in enumerate(ids) if token == start_id]
    ends = [i for i, token in enumerate(ids) if token == end_id]
    frames = [list(range(s + 1, e)) for s, e in zip(starts, ends)]
    layout = prepared.layout

    assert len(frames) == 4 and all(len(frame) == 16 for frame in frames)
    assert all(ids[p] == hf.config.image_token_id for frame in frames for p in frame)
    assert list(layout.video_positions) == [p for frame in frames for p in frame]
    for index, frame in enumerate(frames):
        assert layout.positions(f"frame[{index}]").tolist() == frame
        label = tokenizer.encode(f"Frame{index + 1}: ", add_special_tokens=False)
        assert ids[frame[0] - 1 - len(label) : frame[0] - 1] == label, f"no 'Frame{index + 1}: ' before frame {index}"
    assert list(layout.video_grid) == [(f, r, c) for f in range(4) for r in range(4) for c in range(4)]
    decode = lambda name: model.to_string(prepared.tokens[0, layout.positions(name)])  # noqa: E731
    assert decode("question_without_options") == question
    assert [decode(f"option[{letter}]") for letter in "ABC"] == ["(A) left", "(B) right", "(C) it stays"]
    assert decode("true_option") == "(C) it stays"
    assert decode("answer_prompt") == "Best option:("
    # A reversed video keeps the layout (same count of tokens per frame), so patching can pair them.
    reverse_prepared = model.prepare(video=reverse(prepared.frames), prompt=multiple_choice_prompt(question, options, 2),
                                     answer_prefix="Best option:(")
    reverse_prepared.layout.check_same_as(layout)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_as_close_to_hf_float32_as_hf_itself(checkpoints, dtype):
    """Against HF in float32 (tests/tolerances.py says why not HF in the same dtype), on two videos."""
    model, hf_half, processor = load_pair(checkpoints["qwen2"], dtype)
    hf_fp32 = reference_model(checkpoints["qwen2"])
    for seed in (6, 7):
        prepared, processed = prepare_with_reference(model, processor, random_video(seed))
        with torch.no_grad():
            ours = model(prepared.tokens)
            half, exact = hf_half(**processed).logits, hf_fp32(**processed).logits
        assert ours.dtype == dtype
        assert_half_precision_close(ours, half, exact, where=f"video seed {seed}")
