"""Parity with the HF LLaVA-NeXT-Video model, per configuration.

The reference is HF alone, fed from the raw inputs (the frames array and the prompt as written,
through the checkpoint's own processor and chat template; tests/oracles.py): it never sees the
text or frames our `prepare` produced.
"""

from __future__ import annotations

import pytest
import torch

import tl_video
from tests.conftest import LLAVA_NEXT_VIDEO_VARIANTS, random_video
from tests.parity import PROMPT, load_pair
from tests.oracles import assert_half_precision_close, assert_same_prompt, hf_chat_inputs, max_diff, reference_model
from tests.tolerances import FUSED_VS_EAGER_FP32, LOGITS_FP32, PATTERN_FP32, RESIDUAL_FP32



def reference_inputs(processor, frames):
    return hf_chat_inputs(processor, frames, PROMPT)


def prepare_checked(model, frames, reference):
    prepared = model.prepare(video=frames, prompt=PROMPT)
    assert_same_prompt(prepared.tokens, reference["input_ids"], model.frontend.video_token_id)
    return prepared


@pytest.mark.parametrize("variant", list(LLAVA_NEXT_VIDEO_VARIANTS))
def test_logits_residuals_and_patterns_match_hf(tiny_checkpoints, variant):
    model, hf, processor = load_pair(tiny_checkpoints[variant])
    frames = random_video(1)
    inputs = reference_inputs(processor, frames)
    prepared = prepare_checked(model, frames, inputs)
    with torch.no_grad():
        reference = hf(**inputs, output_hidden_states=True, output_attentions=True)
        logits, cache = model.run_with_cache(prepared.tokens)

    assert max_diff(logits, reference.logits) <= LOGITS_FP32, f"{variant}: logits differ by {max_diff(logits, reference.logits):.2e}"
    # HF hidden_states[l] is the residual entering layer l; the last entry is after the final norm.
    for layer in range(model.cfg.n_layers):
        diff = max_diff(cache[f"blocks.{layer}.hook_resid_pre"], reference.hidden_states[layer])
        assert diff <= RESIDUAL_FP32, f"{variant}: resid_pre of layer {layer} differs by {diff:.2e}"
        diff = max_diff(cache[f"blocks.{layer}.attn.hook_pattern"], reference.attentions[layer])
        assert diff <= PATTERN_FP32, f"{variant}: pattern of layer {layer} differs by {diff:.2e}"
    final = model.ln_final(cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"])
    assert max_diff(final, reference.hidden_states[-1]) <= RESIDUAL_FP32


def test_video_tokens_equal_hf_video_features(tiny_checkpoint):
    model, hf, processor = load_pair(tiny_checkpoint)
    frames = random_video(2)
    processed = reference_inputs(processor, frames)
    prepared = prepare_checked(model, frames, processed)
    with torch.no_grad():
        expected = hf.get_video_features(
            pixel_values_videos=processed["pixel_values_videos"],
            vision_feature_layer=hf.config.vision_feature_layer,
            vision_feature_select_strategy=hf.config.vision_feature_select_strategy,
        ).pooler_output.reshape(-1, model.cfg.d_model)
    _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
    assert max_diff(cache["hook_video_embed"][0], expected) == 0.0


def test_fused_attention_matches_eager(tiny_checkpoints):
    model = tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoints["gqa_bias"])
    prepared = model.prepare(video=random_video(3), prompt=PROMPT)
    with torch.no_grad():
        fused = model(prepared.tokens)  # no hook reads the pattern: SDPA
        model.cfg.attn_implementation = "eager"
        eager = model(prepared.tokens)
    assert max_diff(fused, eager) <= FUSED_VS_EAGER_FP32


@pytest.mark.parametrize("variant", ["plain", "gqa_bias"])
def test_greedy_generation_matches_hf(tiny_checkpoints, variant):
    model, hf, processor = load_pair(tiny_checkpoints[variant])
    frames = random_video(4)
    processed = reference_inputs(processor, frames)
    prepared = prepare_checked(model, frames, processed)
    with torch.no_grad():
        expected = hf.generate(**processed, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    ours = model.generate(prepared.tokens, max_new_tokens=8, stop_at_eos=False)
    assert ours[0, prepared.tokens.shape[1]:].tolist() == expected[0, processed["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_as_close_to_hf_float32_as_hf_itself(tiny_checkpoint, dtype):
    """Against HF in float32 (tests/tolerances.py says why not HF in the same dtype), on three videos."""
    model, hf_half, processor = load_pair(tiny_checkpoint, dtype=dtype)
    hf_fp32 = reference_model(tiny_checkpoint)
    for seed in (5, 7, 9):
        frames = random_video(seed)
        inputs = reference_inputs(processor, frames)
        prepared = prepare_checked(model, frames, inputs)
        with torch.no_grad():
            ours = model(prepared.tokens)
            half, exact = hf_half(**inputs).logits, hf_fp32(**inputs).logits
        assert ours.dtype == dtype
        assert_half_precision_close(ours, half, exact, where=f"video seed {seed}")


def test_bf16_eager_is_bitwise_equal_to_hf(tiny_checkpoint):
    """Same kernels in the same order (fused matmul + bias, float32 norm and softmax): identical rounding."""
    model, hf, processor = load_pair(tiny_checkpoint, dtype=torch.bfloat16, attn_implementation="eager")
    frames = random_video(6)
    inputs = reference_inputs(processor, frames)
    prepared = prepare_checked(model, frames, inputs)
    with torch.no_grad():
        ours = model(prepared.tokens)
        reference = hf(**inputs).logits
    assert torch.equal(ours, reference)
