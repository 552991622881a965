"""tl_video.memory: the estimate against measured peak tensor memory, its scaling, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tl_video
from tl_video.memory import PIPELINES, MemoryEstimate, PeakTensorMemory, estimate_memory, model_sizes
from tl_video.model.config import VideoTransformerConfig
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_llava_next_video

TOLERANCE = 0.15  # estimate / measured within 1 +- this (the documented validation bound)
QWEN_7B = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
           "intermediate_size": 18944, "vocab_size": 152064}


@pytest.fixture(scope="module")
def small():
    """A random LLaVA-NeXT-Video model with a vocabulary large enough that logits matter, and one input."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = save_tiny_llava_next_video(
            folder, num_hidden_layers=3, hidden_size=128, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=344, image_size=112, patch_size=14, text_fields={"vocab_size": 4096},
        )
        model = tl_video.HookedVideoTransformer.from_pretrained(checkpoint)
    frames = np.random.RandomState(0).randint(0, 256, (4, 120, 160, 3), dtype=np.uint8)
    prompt = multiple_choice_prompt("What happens first?", ["a cat jumps", "a door opens"], answer_index=1)
    return model, model.prepare(video=frames, prompt=prompt, answer_prefix="Best option:(")


def _measured(model, prepared, run) -> int:
    tracker = PeakTensorMemory([*model.parameters(), *model.buffers(), prepared.tokens])
    with torch.no_grad(), tracker:
        run()
    return tracker.peak


def _estimate(model, prepared, pipeline, **options) -> MemoryEstimate:
    return estimate_memory(model, pipeline, prepared.tokens.shape[1], dtype=model.cfg.dtype,
                           n_video_tokens=len(prepared.layout.video_positions), **options)


def test_flow_estimate_matches_the_measured_peak(small):
    from tl_video.analyses.sweep import knockout_probabilities
    from tl_video.interventions.presets import preset

    model, prepared = small
    n_layers = model.cfg.n_layers
    specs = preset("cross-frame", prepared.layout, [0]) + preset("vql-to-ql", prepared.layout, [n_layers - 1])
    measured = _measured(model, prepared, lambda: knockout_probabilities(model, prepared, specs))
    estimate = _estimate(model, prepared, "flow", n_specs=len(specs))
    print(f"{estimate.pipeline}: estimated {estimate.activation_bytes} measured {measured} ratio {estimate.activation_bytes / measured:.3f}")
    assert abs(estimate.activation_bytes / measured - 1) < TOLERANCE, (estimate.activation_bytes, measured)


def test_attention_estimate_matches_the_measured_peak(small):
    from tl_video.interventions.attention_maps import query_attention_to_video

    model, prepared = small
    measured = _measured(model, prepared, lambda: query_attention_to_video(model, prepared, "question"))
    estimate = _estimate(model, prepared, "attention", n_query_tokens=len(prepared.layout.positions("question")))
    print(f"{estimate.pipeline}: estimated {estimate.activation_bytes} measured {measured} ratio {estimate.activation_bytes / measured:.3f}")
    assert abs(estimate.activation_bytes / measured - 1) < TOLERANCE, (estimate.activation_bytes, measured)


def test_weights_count_the_model_parameters_exactly(small):
    model, _ = small
    backbone = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("frontend."))
    assert model_sizes(model).parameters == backbone
    assert model_sizes(model.cfg).parameters == backbone


def test_half_precision_halves_the_weights_and_devices_split_them():
    fp32 = estimate_memory(QWEN_7B, "flow", 1500, dtype=torch.float32)
    bf16 = estimate_memory(QWEN_7B, "flow", 1500, dtype="bfloat16")
    assert fp32.weights_bytes == 2 * bf16.weights_bytes
    assert 7.0e9 < bf16.weights_bytes / 2 < 8.0e9  # Qwen2.5-VL-7B's language model: about 7.6 B parameters
    split = estimate_memory(QWEN_7B, "flow", 1500, n_devices=4)
    assert len(split.per_device_bytes) == 4
    assert max(split.per_device_bytes) < 0.5 * bf16.device_bytes
    assert sum(split.per_device_bytes) >= bf16.device_bytes  # each device also holds a layer's working set


def test_estimates_grow_with_the_input_and_name_their_largest_term():
    for pipeline in PIPELINES[:-1]:
        short, long = (estimate_memory(QWEN_7B, pipeline, n) for n in (500, 2000))
        assert long.total_bytes > short.total_bytes, pipeline
    # attention maps keep only the query rows: one layer's eager scores outweigh them
    assert estimate_memory(QWEN_7B, "attention", 5000).terms[0][0] == "scores + float32 softmax of one layer"
    assert estimate_memory(QWEN_7B, "flow", 1500).dominant == "weights"
    assert "GiB" in str(estimate_memory(QWEN_7B, "lens", 1500))


def test_frontend_is_its_parameter_count():
    estimate = estimate_memory(QWEN_7B, "frontend", 1500, frontend_parameters=670_000_000)
    assert estimate.frontend_bytes == 2 * 670_000_000
    assert estimate_memory(QWEN_7B, "frontend", 1500).frontend_bytes is None


def test_bad_inputs_are_one_line_naming_the_fix():
    with pytest.raises(ValueError, match="valid: flow, pathways, patching, lens, attention, open_ended, frontend"):
        estimate_memory(QWEN_7B, "knockout", 1500)
    with pytest.raises(ValueError, match="n_tokens"):
        estimate_memory(QWEN_7B, "flow", 0)
    with pytest.raises(ValueError, match=r"vocab_size"):
        estimate_memory({k: v for k, v in QWEN_7B.items() if k != "vocab_size"}, "flow", 100)
    with pytest.raises(TypeError, match="HookedVideoTransformer"):
        estimate_memory("Qwen/Qwen2.5-VL-7B-Instruct", "flow", 100)
    with pytest.raises(ValueError, match="n_devices"):
        estimate_memory(VideoTransformerConfig(d_model=64, n_layers=2, n_ctx=128, d_head=16, n_heads=4, d_mlp=128, d_vocab=100), "flow", 10, n_devices=3)
