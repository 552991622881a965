"""A model split over several devices gives the numbers of the unsplit model, in every analysis.

Without GPUs here, the devices are simulated (`tl_video.testing.virtual_devices`): each virtual CUDA
tensor computes with the CPU kernels, so every number must equal the CPU model's exactly, and every
operation checks its operands' devices as CUDA torch does, so a missing transfer fails as it would on
a multi-GPU machine. On a machine with CUDA, the last test repeats the split over real devices.

The model is Qwen3-VL (M-RoPE positions and DeepStack features added after layers 0-2, the most
device-sensitive family): layers 0-1 on cuda:0 (with the embedding and video bank), layer 2 and the
unembedding on cuda:1, the vision tower on cuda:2.
"""

from __future__ import annotations

import pytest
import torch

import tl_video
from tl_video.analyses.knockout_attribution import knockout_estimates
from tl_video.analyses.sweep_engine import engine_probabilities
from tl_video.interventions.attention_maps import query_attention_to_video
from tl_video.interventions.knockout import KnockoutSpec, knockout_hooks
from tl_video.interventions.logit_lens import video_token_top_k
from tl_video.interventions.patching import patch_frames
from tl_video.testing import save_tiny_qwen3_vl
from tl_video.testing.virtual_devices import real, virtual_cuda_devices
from tests.conftest import random_video
from tests.parity import PROMPT


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_qwen3_vl(tmp_path_factory.mktemp("split") / "qwen3_vl", num_hidden_layers=3)


@pytest.fixture(scope="module")
def cpu_model(folder):
    return tl_video.HookedVideoTransformer.from_pretrained(folder)


def _split(folder, devices):
    return tl_video.HookedVideoTransformer.from_pretrained(
        folder, devices=devices[:2], frontend_device=devices[2], layers_per_device=[2, 1]
    )


def _values(tensor):
    return real(tensor) if type(tensor) is not torch.Tensor else tensor


def test_forward_cache_and_transformer_lens_tools_equal_the_unsplit_model(folder, cpu_model):
    video = random_video(5)
    reference_input = cpu_model.prepare(video, PROMPT)
    expected, expected_cache = cpu_model.run_with_cache(reference_input.tokens)
    with virtual_cuda_devices(3) as devices, torch.no_grad():
        model = _split(folder, devices)
        assert model.placement.describe() == (
            "front end on cuda:2; embedding and layers 0-1 on cuda:0; layer 2 and unembedding on cuda:1"
        )
        assert {str(p.device) for p in model.blocks[0].parameters()} == {"cuda:0"}
        assert {str(p.device) for p in model.frontend.parameters()} == {"cuda:2"}
        prepared = model.prepare(video, PROMPT)
        assert prepared.tokens.device == devices[0] and model.video_bank.embeddings.device == devices[0]
        logits, cache = model.run_with_cache(prepared.tokens)
        assert logits.device == devices[1]
        assert cache["blocks.0.hook_resid_post"].device == devices[1]  # caches gather where W_U is
        assert torch.equal(_values(logits), expected)
        for name in ("blocks.0.hook_resid_post", "blocks.2.attn.hook_pattern", "blocks.1.hook_video_injection"):
            assert torch.equal(_values(cache[name]), expected_cache[name]), name
        # TransformerLens's tools combine layers (and W_U) on one device
        decomposed = cache.decompose_resid(return_labels=False)
        assert torch.allclose(_values(decomposed.sum(0)), expected_cache.decompose_resid(return_labels=False).sum(0))
        true_token = int(expected[0, -1].argmax())
        attrs = cache.logit_attrs(cache.accumulated_resid(), tokens=true_token)
        assert torch.allclose(_values(attrs), expected_cache.logit_attrs(expected_cache.accumulated_resid(), tokens=true_token))
        # a cache restricted by hook and position, off the accelerators, as a 72B model's caches must be
        kept = model.run_with_cache(prepared.tokens, names_filter="blocks.2.hook_resid_post", pos_slice=-1, device="cpu")[1]
        assert list(kept.keys()) == ["blocks.2.hook_resid_post"] and type(kept["blocks.2.hook_resid_post"]) is torch.Tensor
        # (fused attention here, eager in the full cache that reads patterns: equal to rounding)
        torch.testing.assert_close(kept["blocks.2.hook_resid_post"], expected_cache["blocks.2.hook_resid_post"][:, -1:])
        generated = model.generate(prepared.tokens, max_new_tokens=3)
        model.cuda(devices[1])  # moved as a whole: the split is gone, and the model still runs
        assert model.placement.is_single_device and model.cfg.device == "cuda:1"
        assert torch.equal(_values(model(prepared.tokens)), cpu_model(reference_input.tokens))
    new = reference_input.tokens.shape[1]  # video ids differ between the two models' banks: compare the new tokens
    assert torch.equal(_values(generated)[:, new:], cpu_model.generate(reference_input.tokens, max_new_tokens=3)[:, new:])


def test_knockouts_sweeps_attribution_patching_and_lens_equal_the_unsplit_model(folder, cpu_model):
    video = random_video(6)
    specs = [
        KnockoutSpec.of([("video", "last")], layers=[1]),
        KnockoutSpec.of([("frame[0]", "frame[1:]")], layers=[0, 1, 2]),
    ]

    def analyses(model):
        prepared = model.prepare(video, PROMPT)
        corrupted = model.prepare(video[::-1].copy(), PROMPT)
        n_layers = model.cfg.n_layers
        with torch.no_grad():
            knocked = model.run_with_hooks(prepared.tokens, fwd_hooks=knockout_hooks(specs[0], prepared.layout, n_layers))
            true_token = int(_values(knocked)[0, -1].argmax())
            _, clean_cache = model.run_with_cache(prepared.tokens)
            metric = lambda logits: logits[0, -1, true_token]  # noqa: E731
            results = {
                "knocked": knocked,
                "sweep": engine_probabilities(model, prepared, specs),
                "lens": video_token_top_k(model, prepared, k=3).top_probabilities,
                "attention_map": query_attention_to_video(model, prepared, "question", knockout=specs[1]).per_token,
                "lens_paper": video_token_top_k(model, prepared, k=3, paper_compat=True).top_probabilities,
                "patch": patch_frames(model, prepared, corrupted, clean_cache, metric, layers=[0, 2], progress=False),
                "batched_patch": patch_frames(
                    model, prepared, corrupted, clean_cache, lambda logits: logits[:, -1, true_token], layers=[1],
                    progress=False, batched=True,
                ),
            }
        return {name: _values(value).cpu() for name, value in results.items()}

    expected = analyses(cpu_model)
    with virtual_cuda_devices(3) as devices:
        got = analyses(_split(folder, devices))
    for name, value in expected.items():
        assert torch.equal(got[name], value), name


def test_gradient_attribution_equals_the_unsplit_model(folder, cpu_model):
    """Gradients flow back through every device boundary (the backward pass moves them too)."""
    video = random_video(8)
    specs = [KnockoutSpec.of([("video", "last")], layers=[1]), KnockoutSpec.of([("question", "last")], layers=[0, 2])]

    def estimates(model):
        prepared = model.prepare(video, PROMPT)
        return knockout_estimates(model, prepared, specs, token=int(model.tokenizer.encode(" A")[0]))

    expected, expected_value = estimates(cpu_model)
    with virtual_cuda_devices(3) as devices:
        got, value = estimates(_split(folder, devices))
    assert torch.equal(got, expected) and value == expected_value


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: splits the model over cuda:0 and the CPU")
def test_split_over_a_real_gpu_and_the_cpu_matches_the_unsplit_model(folder, cpu_model):
    video = random_video(7)
    expected = cpu_model(cpu_model.prepare(video, PROMPT).tokens)
    model = tl_video.HookedVideoTransformer.from_pretrained(folder, devices=["cuda:0", "cpu"], frontend_device="cuda:0")
    logits = model(model.prepare(video, PROMPT).tokens)
    assert logits.device.type == "cpu"
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)  # CUDA kernels round differently
