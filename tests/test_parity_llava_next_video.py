"""Parity with the HF LLaVA-NeXT-Video model on the same video input, per configuration."""

from __future__ import annotations

import pytest
import torch

import tl_video
from tests.conftest import LLAVA_NEXT_VIDEO_VARIANTS, random_video
from tests.tolerances import FUSED_VS_EAGER_FP32, LOGITS_HALF, LOGITS_FP32, PATTERN_FP32, RESIDUAL_FP32

PROMPT = "What happens in the video?"


def load_pair(folder):
    model = tl_video.HookedVideoTransformer.from_pretrained(folder, keep_hf_model=True)
    hf = model.hf_model[0]
    hf.set_attn_implementation("eager")
    return model, hf


def hf_forward(model, hf, prepared, **kwargs):
    processed = model.processor(text=prepared.text, videos=[prepared.frames], return_tensors="pt")
    with torch.no_grad():
        return hf(**processed, **kwargs)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("variant", list(LLAVA_NEXT_VIDEO_VARIANTS))
def test_logits_residuals_and_patterns_match_hf(tiny_checkpoints, variant):
    model, hf = load_pair(tiny_checkpoints[variant])
    prepared = model.prepare(video=random_video(1), prompt=PROMPT)
    reference = hf_forward(model, hf, prepared, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
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
    model, hf = load_pair(tiny_checkpoint)
    prepared = model.prepare(video=random_video(2), prompt=PROMPT)
    processed = model.processor(text=prepared.text, videos=[prepared.frames], return_tensors="pt")
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
    model, hf = load_pair(tiny_checkpoints[variant])
    prepared = model.prepare(video=random_video(4), prompt=PROMPT)
    processed = model.processor(text=prepared.text, videos=[prepared.frames], return_tensors="pt")
    with torch.no_grad():
        expected = hf.generate(**processed, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    ours = model.generate(prepared.tokens, max_new_tokens=8, stop_at_eos=False)
    assert ours[0, prepared.tokens.shape[1]:].tolist() == expected[0, processed["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_hf_in_the_same_dtype(tiny_checkpoint, dtype):
    model = tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint, dtype=dtype, keep_hf_model=True)
    hf = model.hf_model[0]
    hf.set_attn_implementation("eager")
    prepared = model.prepare(video=random_video(5), prompt=PROMPT)
    with torch.no_grad():
        ours = model(prepared.tokens)
    reference = hf_forward(model, hf, prepared).logits
    assert ours.dtype == dtype
    assert max_diff(ours, reference) <= LOGITS_HALF, f"{dtype}: {max_diff(ours, reference):.3f}"


def test_bf16_eager_is_bitwise_equal_to_hf(tiny_checkpoint):
    """Same kernels in the same order (fused matmul + bias, float32 norm and softmax): identical rounding."""
    model = tl_video.HookedVideoTransformer.from_pretrained(
        tiny_checkpoint, dtype=torch.bfloat16, keep_hf_model=True, attn_implementation="eager"
    )
    hf = model.hf_model[0]
    hf.set_attn_implementation("eager")
    prepared = model.prepare(video=random_video(6), prompt=PROMPT)
    with torch.no_grad():
        ours = model(prepared.tokens)
    assert torch.equal(ours, hf_forward(model, hf, prepared).logits)
