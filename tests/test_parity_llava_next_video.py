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
from tests.oracles import max_diff
from tests.parity import (
    PROMPT, assert_greedy_matches_hf, assert_half_precision_matches_hf, assert_matches_hf, load_pair,
    prepare_with_reference,
)
from tests.tolerances import FUSED_VS_EAGER_FP32
from tl_video.loading import CheckpointError
from tl_video.testing import save_tiny_llava_next_video


@pytest.mark.parametrize("variant", list(LLAVA_NEXT_VIDEO_VARIANTS))
def test_logits_residuals_and_patterns_match_hf(tiny_checkpoints, variant):
    model, hf, processor = load_pair(tiny_checkpoints[variant])
    prepared, processed = prepare_with_reference(model, processor, random_video(1))
    assert_matches_hf(model, hf, prepared, processed, where=f"llava_next_video {variant}")


# Released shapes beyond conftest's variants, each a saved checkpoint built here.
RELEASED_VARIANTS = {
    # a Llama LM whose config gives head_dim: 4 heads of 32 over a 64-wide residual, GQA
    "wide_heads": {"head_dim": 32, "num_key_value_heads": 2},
    # YaRN, the long-context rope scaling Qwen's model cards suggest (attention scaling on cos/sin)
    "rope_yarn": {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 64,
    }},
    # LLaVA-NeXT-Video-7B-32K-hf: Mistral-7B-Instruct-v0.2 LM (model_type mistral, null sliding window)
    "mistral_32k": {"text_fields": {
        "model_type": "mistral", "sliding_window": None, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
    }},
}


@pytest.mark.parametrize("variant", list(RELEASED_VARIANTS))
def test_released_shapes_match_hf(tmp_path, variant):
    folder = save_tiny_llava_next_video(tmp_path / variant, **RELEASED_VARIANTS[variant])
    model, hf, processor = load_pair(folder)
    assert model.cfg.d_model == 64 and model.cfg.d_head == RELEASED_VARIANTS[variant].get("head_dim", 16)
    assert type(hf.model.language_model).__name__ == ("MistralModel" if variant == "mistral_32k" else "LlamaModel")
    prepared, processed = prepare_with_reference(model, processor, random_video(1))
    assert_matches_hf(model, hf, prepared, processed, where=f"llava_next_video {variant}")


def test_a_divergence_is_reported_at_its_worst_layer(tiny_checkpoint):
    """The shared check names the layer whose residual (and pattern) moved, not just the logits."""
    model, hf, processor = load_pair(tiny_checkpoint)
    with torch.no_grad():
        model.blocks[0].mlp.W_out.mul_(1.01)  # changes what enters layer 1, and layer 1's pattern
    prepared, processed = prepare_with_reference(model, processor, random_video(1))
    with pytest.raises(AssertionError, match=r"logits differ by .*resid_pre of layer 1 differs by .*pattern of layer 1"):
        assert_matches_hf(model, hf, prepared, processed, where="perturbed")


def test_mistral_sliding_window_in_use_is_refused(tmp_path):
    folder = save_tiny_llava_next_video(tmp_path / "mistral", text_fields={"model_type": "mistral", "sliding_window": 16})
    with pytest.raises(CheckpointError, match=r"sliding-window attention in layers \[0, 1\] \(a sliding window of 16 tokens\).*sliding_window=null"):
        tl_video.HookedVideoTransformer.from_pretrained(folder)


def test_video_tokens_equal_hf_video_features(tiny_checkpoint):
    model, hf, processor = load_pair(tiny_checkpoint)
    prepared, processed = prepare_with_reference(model, processor, random_video(2))
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
    assert_greedy_matches_hf(model, hf, *prepare_with_reference(model, processor, random_video(4)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_as_close_to_hf_float32_as_hf_itself(tiny_checkpoint, dtype):
    videos = {f"video seed {seed}": random_video(seed) for seed in (5, 7, 9)}
    assert_half_precision_matches_hf(tiny_checkpoint, dtype, videos)


def test_bf16_eager_is_bitwise_equal_to_hf(tiny_checkpoint):
    """Same kernels in the same order (fused matmul + bias, float32 norm and softmax): identical rounding."""
    model, hf, processor = load_pair(tiny_checkpoint, dtype=torch.bfloat16, attn_implementation="eager")
    prepared, inputs = prepare_with_reference(model, processor, random_video(6))
    with torch.no_grad():
        ours = model(prepared.tokens)
        reference = hf(**inputs).logits
    assert torch.equal(ours, reference)
