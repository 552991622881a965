"""bf16 and fp16 throughout: every family, the knockout and sweep engine, and `tl-video study`.

For each supported family (a tiny random checkpoint saved to disk, loaded through the public
`HookedVideoTransformer.from_pretrained(folder, dtype=...)`), in bfloat16 and float16:

- every parameter is in that dtype (front end included), and so is every floating buffer except
  the rotary `inv_freq` tables, which HF keeps in float32 too (a few numbers, not activations);
- the front end's output, the video bank's embeddings (and per-token extras), every cached
  activation, the key/value cache and the logits are in that dtype: no silent float32 upcast (double the memory), no
  silent downcast;
- the logits are as close to HF float32 as HF's own run in the same dtype is, on the same video
  (`tests.oracles.assert_half_precision_close`; tests/tolerances.py says why not HF in the same
  dtype with a fixed bound).

Then a knockout and the exact sweep engine in half precision equal the plain forward in the same
dtype, and `tl-video study --dtype bfloat16` / `float16` runs end to end on the built-in model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from transformers import LlavaForConditionalGeneration

import tl_video
from tests.conftest import random_video
from tests.oracles import assert_half_precision_close, max_diff, reference_model, reference_processor
from tests.parity import PROMPT, prepare_with_reference
from tests.test_parity_pllava import spliced_inputs
from tests.test_parity_qwen_vl import prepare_with_reference as qwen_prepare_with_reference
from tests.test_parity_videollama3 import PRUNED_VIDEO_CHANGES, partly_static
from tl_video.analyses.records import read_records
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.cli import main
from tl_video.interventions import blocked_edges_by_layer, knockout_hooks
from tl_video.interventions.knockout import KnockoutSpec
from tl_video.interventions.presets import preset
from tl_video.model.kv_cache import KeyValueCache
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import (
    save_tiny_internvl, save_tiny_llava_next_video, save_tiny_llava_onevision, save_tiny_pllava, save_tiny_qwen2_5_vl,
    save_tiny_qwen3_vl, save_tiny_videollama3,
)
from tl_video.testing.published_internvl_chat import save_published_internvl_chat
from tl_video.testing.published_pllava import save_published_pllava
from tl_video.testing.published_videollama3 import save_published_videollama3

HALF = [torch.bfloat16, torch.float16]
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
# Floating buffers allowed to stay float32: rotary frequency tables (HF keeps them float32 as well;
# cos/sin are cast to the activation dtype where they are used).
FLOAT32_BUFFERS = ("inv_freq", "original_inv_freq")
# Cached activations allowed to stay float32: RMSNorm's per-position scale ([batch, pos, 1], one number
# per position, 1/d_model of a residual), computed in float32 as HF does.
FLOAT32_ACTIVATIONS = ("hook_scale",)


@dataclass(frozen=True)
class Family:
    """How to build a family's tiny checkpoint, its test video, and HF's inputs for that video."""

    build: Callable[[Path], Path]
    video: Callable[[], np.ndarray]
    # (our model, an HF model, HF's processor, frames) -> (our prepared input, that HF model's inputs)
    reference: Callable[..., tuple[Any, dict[str, Any]]] = (
        lambda model, hf, processor, frames: prepare_with_reference(model, processor, frames)
    )
    hf_class: Any = None
    # PLLaVA's HF inputs are `inputs_embeds` computed by the HF modules: each HF model makes its own.
    inputs_use_hf_weights: bool = False


def _pllava_reference(model, hf, processor, frames):
    """PLLaVA has no HF video path: HF's modules run PLLaVA's recipe, spliced as `inputs_embeds`."""
    ids, _, embeds = spliced_inputs(hf, processor.tokenizer, frames)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    text = ids != hf.config.image_token_id
    assert torch.equal(prepared.tokens[0, text], ids[text]), "text tokens differ from the PLLaVA prompt's"
    return prepared, {"inputs_embeds": embeds}


FAMILIES = {
    "llava_next_video": Family(save_tiny_llava_next_video, lambda: random_video(5)),
    "llava_onevision": Family(save_tiny_llava_onevision, lambda: random_video(6)),
    "qwen2_5_vl": Family(
        save_tiny_qwen2_5_vl, lambda: random_video(9),
        lambda model, hf, processor, frames: qwen_prepare_with_reference(model, hf, processor, frames, None),
    ),
    "qwen3_vl": Family(
        save_tiny_qwen3_vl, lambda: random_video(10),
        lambda model, hf, processor, frames: qwen_prepare_with_reference(model, hf, processor, frames, None),
    ),
    "internvl": Family(save_tiny_internvl, lambda: random_video(7)),
    "videollama3": Family(save_tiny_videollama3, lambda: partly_static(8, PRUNED_VIDEO_CHANGES)),
    "pllava": Family(
        save_tiny_pllava, lambda: random_video(21), _pllava_reference, LlavaForConditionalGeneration,
        inputs_use_hf_weights=True,
    ),
}
CASES = [pytest.param(family, dtype, id=f"{family}-{DTYPE_NAMES[dtype]}") for family in FAMILIES for dtype in HALF]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matrices: one torch thread is ~20x faster than two on this busy shared machine (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("half_precision")
    return {name: family.build(root / name) for name, family in FAMILIES.items()}


@dataclass
class Loaded:
    """One family loaded in one dtype, with what its front end produced for the family's video."""

    model: Any
    prepared: Any
    features: Any  # the front end's `VideoFeatures` for the video, as `prepare` received them


@pytest.fixture(scope="module")
def loaded(folders) -> Callable[[str, torch.dtype], Loaded]:
    """(family, dtype) -> our model loaded in that dtype, loaded once per module."""
    models: dict[tuple[str, torch.dtype], Loaded] = {}

    def get(family: str, dtype: torch.dtype) -> Loaded:
        if (family, dtype) not in models:
            model = tl_video.HookedVideoTransformer.from_pretrained(folders[family], dtype=dtype)
            captured = []
            encode = model.frontend.encode
            model.frontend.encode = lambda **inputs: captured.append(encode(**inputs)) or captured[-1]
            prepared = model.prepare(video=FAMILIES[family].video(), prompt=PROMPT)
            del model.frontend.encode  # back to the class's method
            assert len(captured) == 1
            models[family, dtype] = Loaded(model, prepared, captured[0])
        return models[family, dtype]

    return get


def floating(named: dict[str, torch.Tensor]) -> dict[str, torch.dtype]:
    return {name: tensor.dtype for name, tensor in named.items() if tensor.is_floating_point()}


@pytest.mark.parametrize("family,dtype", CASES)
def test_every_parameter_and_buffer_is_in_the_load_dtype(loaded, family, dtype):
    model = loaded(family, dtype).model
    assert model.cfg.dtype == dtype
    parameters = floating(dict(model.named_parameters()))
    assert any(name.startswith("frontend.") for name in parameters), "the front end holds no parameters?"
    wrong = {name: kind for name, kind in parameters.items() if kind != dtype}
    assert not wrong, f"{family} loaded in {dtype}: {len(wrong)} parameters are not, e.g. {sorted(wrong.items())[:4]}"
    buffers = floating(dict(model.named_buffers()))
    wrong = {
        name: kind for name, kind in buffers.items()
        if kind != dtype and not (name.endswith(FLOAT32_BUFFERS) and kind == torch.float32)
    }
    assert not wrong, f"{family} loaded in {dtype}: buffers {sorted(wrong.items())[:4]}"


@pytest.mark.parametrize("family,dtype", CASES)
def test_front_end_output_bank_cache_and_logits_are_in_the_load_dtype(loaded, family, dtype):
    case = loaded(family, dtype)
    model, features = case.model, case.features
    assert features.embeddings.dtype == dtype, f"{family} front end returns {features.embeddings.dtype}"
    assert all(value.dtype == dtype for value in features.extras.values() if value.is_floating_point())
    bank = model.video_bank
    assert bank.embeddings.dtype == dtype
    assert all(value.dtype == dtype for value in bank.extras.values() if value.is_floating_point())
    rows = bank.rows(case.prepared.tokens[0, case.prepared.layout.video_positions])
    assert torch.equal(bank.embeddings[rows], features.embeddings)  # stored as produced, no cast
    keys_values = KeyValueCache.empty(model.cfg.n_layers)
    with torch.no_grad():
        logits, cache = model.run_with_cache(case.prepared.tokens, past_kv_cache=keys_values)
    assert logits.dtype == dtype and bool(torch.isfinite(logits).all())
    assert {tensor.dtype for layer in keys_values.layers for tensor in (layer.keys, layer.values)} == {dtype}
    activations = floating(dict(cache.items()))
    assert "hook_video_embed" in activations and len(activations) > 20
    wrong = {
        name: kind for name, kind in activations.items()
        if kind != dtype and not (name.endswith(FLOAT32_ACTIVATIONS) and kind == torch.float32)
    }
    assert not wrong, f"{family} in {dtype}: cached activations {sorted(wrong.items())[:6]}"


@pytest.mark.parametrize("dtype", HALF)
def test_rms_norm_caches_its_normalized_input_in_the_load_dtype(loaded, dtype):
    case = loaded("qwen3_vl", dtype)  # ln1, ln2, q_norm, k_norm and ln_final
    with torch.no_grad():
        _, cache = case.model.run_with_cache(case.prepared.tokens, names_filter=lambda name: name.endswith("hook_normalized"))
    assert len(cache) == 4 * case.model.cfg.n_layers + 1
    assert {cache[name].dtype for name in cache} == {dtype}


@pytest.fixture(scope="module")
def hf_float32(folders, loaded) -> Callable[[str], tuple[dict[str, Any], torch.Tensor]]:
    """family -> (HF's inputs for the family's video, HF float32 logits on them), computed once per module."""
    runs: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}

    def get(family: str) -> tuple[dict[str, Any], torch.Tensor]:
        if family not in runs:
            spec, case = FAMILIES[family], loaded(family, torch.bfloat16)
            hf = reference_model(folders[family], torch.float32, spec.hf_class)
            prepared, inputs = spec.reference(case.model, hf, reference_processor(folders[family]), spec.video())
            assert torch.equal(prepared.tokens, case.prepared.tokens)  # the video banked when the model was loaded
            with torch.no_grad():
                runs[family] = inputs, hf(**inputs).logits
        return runs[family]

    return get


@pytest.mark.parametrize("family,dtype", CASES)
def test_logits_are_as_close_to_hf_float32_as_hf_in_the_same_dtype(loaded, folders, hf_float32, family, dtype):
    spec, case = FAMILIES[family], loaded(family, dtype)
    inputs, exact = hf_float32(family)
    hf_half = reference_model(folders[family], dtype, spec.hf_class)
    if spec.inputs_use_hf_weights:
        prepared, inputs = spec.reference(case.model, hf_half, reference_processor(folders[family]), spec.video())
        assert torch.equal(prepared.tokens, case.prepared.tokens)
    with torch.no_grad():
        ours = case.model(case.prepared.tokens)
        half = hf_half(**inputs).logits
    assert ours.dtype == half.dtype == dtype and exact.dtype == torch.float32
    print(f"half precision {family} {DTYPE_NAMES[dtype]}: ours {max_diff(ours, exact):.4f}, HF {max_diff(half, exact):.4f} "
          f"from HF float32 (|logit| <= {exact.abs().max():.1f}); ours vs HF same dtype {max_diff(ours, half):.4f}")
    assert_half_precision_close(ours, half, exact, where=f"{family} {DTYPE_NAMES[dtype]}")


@pytest.mark.parametrize("family", ["llava_next_video", "qwen3_vl"])
@pytest.mark.parametrize("cast,dtype", [
    pytest.param(lambda model: model.to(torch.bfloat16), torch.bfloat16, id="to-bfloat16"),
    pytest.param(lambda model: model.half(), torch.float16, id="half"),
])
def test_casting_a_loaded_model_equals_loading_it_in_that_dtype(loaded, folders, family, cast, dtype):
    """`from_pretrained(folder).to(dtype)` is `from_pretrained(folder, dtype=dtype)`: same config, buffers, logits."""
    direct = loaded(family, dtype)
    model = cast(tl_video.HookedVideoTransformer.from_pretrained(folders[family]))
    assert model.cfg.dtype == dtype
    prepared = model.prepare(video=FAMILIES[family].video(), prompt=PROMPT)
    assert floating(dict(model.named_buffers())) == floating(dict(direct.model.named_buffers()))
    with torch.no_grad():
        assert torch.equal(model(prepared.tokens), direct.model(direct.prepared.tokens))


PUBLISHED = {  # published layouts converted on load, each saved in bfloat16 as released
    "pllava": lambda folder: save_published_pllava(folder).folder,
    "videollama3": save_published_videollama3,
    "internvl_chat": save_published_internvl_chat,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_layouts_load_in_the_requested_dtype_not_the_stored_one(tmp_path, name):
    """The conversion keeps the stored dtype on disk; the load still casts everything to the one asked for."""
    folder = PUBLISHED[name](tmp_path / name)
    for dtype in (torch.float32, torch.float16):
        model = tl_video.HookedVideoTransformer.from_pretrained(folder, dtype=dtype)
        assert set(floating(dict(model.named_parameters())).values()) == {dtype}, f"{name} in {dtype}"
        prepared = model.prepare(video=random_video(3), prompt=PROMPT)
        with torch.no_grad():
            logits = model(prepared.tokens)
        assert model.video_bank.embeddings.dtype == logits.dtype == dtype and bool(torch.isfinite(logits).all())


# --------------------------------------------------------------------------- knockout and sweep engine


def question_input(model):
    """A short multiple-choice prompt (the tiny checkpoints' tokenizer spends a token per byte)."""
    prompt = multiple_choice_prompt("Which way?", ["left", "right"], answer_index=1)
    return model.prepare(video=random_video(7, height=24, width=32), prompt=prompt, answer_prefix="(")


# Probabilities in [0, 1]: one unit in the last place near 1 (bf16: 8 bits of mantissa, fp16: 11).
PROBABILITY_ULP = {torch.bfloat16: 2**-8, torch.float16: 2**-11}
# A softmax probability moves by at most |delta logit|_max / 2 (each row of the softmax's Jacobian
# sums to 2 p (1 - p) <= 1/2 in absolute value): tests/tolerances.py's logit bounds, halved.
PROBABILITY_VS_FP32 = {torch.bfloat16: 0.1, torch.float16: 0.015}


def knockout_specs(layout, n_layers: int) -> list[KnockoutSpec]:
    """The identity (the clean run) first, then three presets' specs over every layer (8 specs)."""
    layers = range(n_layers)
    return [KnockoutSpec()] + [
        spec for name in ("cross-frame", "vql-to-ql", "question-and-options-to-last") for spec in preset(name, layout, layers)
    ]


@pytest.mark.parametrize("family", ["llava_next_video", "qwen3_vl"])  # 1D RoPE; M-RoPE with DeepStack
@pytest.mark.parametrize("dtype", HALF)
def test_knockout_and_sweep_engine_in_half_precision(loaded, family, dtype):
    """Under each knockout the engines equal the plain forward in the same dtype, which is the float32 one up to rounding."""
    half, exact_model = loaded(family, dtype).model, loaded(family, torch.float32).model
    prepared, exact_prepared = question_input(half), question_input(exact_model)
    specs = knockout_specs(prepared.layout, half.cfg.n_layers)
    plain = knockout_probabilities(half, prepared, specs, engine="plain")
    exact = knockout_probabilities(exact_model, exact_prepared, specs, engine="plain")
    assert plain.dtype == torch.float32 and bool(torch.isfinite(plain).all())
    assert torch.allclose(plain.sum(-1), torch.ones(len(specs)), atol=1e-4)
    half_error = float((plain - exact).abs().max())
    effect = float((exact[1:] - exact[0]).abs().max())  # the largest change a knockout makes, float32
    for engine in ("exact", "batched"):
        fast = knockout_probabilities(half, prepared, specs, engine=engine)
        engine_error = float((fast - plain).abs().max())
        print(f"knockout {family} {DTYPE_NAMES[dtype]} {engine}: |engine - plain| {engine_error:.2e}, "
              f"|plain - float32| {half_error:.2e}, largest knockout effect {effect:.2e}")
        # The engine resumes from the cached residuals and keys/values of the same half-precision run, so
        # it may only reassociate sums: no more than the rounding the half forward itself carries.
        assert engine_error <= max(half_error, PROBABILITY_ULP[dtype])
    # The half-precision knockouts are the float32 ones up to rounding, and far beyond that rounding.
    assert half_error <= PROBABILITY_VS_FP32[dtype]
    assert effect > 10 * half_error


def test_knockout_hook_blocks_with_the_half_dtype_minimum(loaded):
    """The blocked entries are finfo(float16).min, not float32's (which would be -inf in float16)."""
    case = loaded("llava_next_video", torch.float16)
    spec = preset("vql-to-ql", case.prepared.layout, range(case.model.cfg.n_layers))[0]
    seen = []
    hooks = knockout_hooks(spec, case.prepared.layout, case.model.cfg.n_layers)
    hooks.append(("blocks.0.attn.hook_attn_mask", lambda mask, hook: seen.append(mask.detach().clone())))
    with torch.no_grad(), case.model.hooks(fwd_hooks=hooks):
        logits = case.model(case.prepared.tokens)
    assert bool(torch.isfinite(logits).all())
    mask = seen[0][0, 0]
    n_tokens = case.prepared.layout.n_tokens
    future = torch.ones(n_tokens, n_tokens, dtype=torch.bool).triu(1)
    blocked = future | blocked_edges_by_layer(spec, case.prepared.layout, case.model.cfg.n_layers)[0]
    assert blocked.sum() > future.sum()  # the knockout blocks causal edges too
    assert mask.dtype == torch.float16 and bool(torch.isfinite(mask).all())
    assert torch.equal(mask == torch.finfo(torch.float16).min, blocked) and bool((mask[~blocked] == 0).all())


# --------------------------------------------------------------------------- the CLI


def every_number(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for item in value.values() for x in every_number(item)]
    if isinstance(value, list):
        return [x for item in value for x in every_number(item)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_study_runs_end_to_end_in_bfloat16_and_float16(tmp_path, capsys):
    """Two examples; bf16: knockouts, pathways, generation probability and patching, fp16: knockouts (same
    data). Every number written is finite, run.json names the dtype, and the two baselines agree.

    Lens and attention are left out for time (their figures alone take ~10 s here); both run in
    bf16 and fp16 with finite numbers when tried by hand."""
    runs = {"bfloat16": ("flow", "pathways", "gen-prob", "patch"), "float16": ("flow",)}
    letters, data = {}, None
    for dtype, analyses in runs.items():
        out = tmp_path / dtype
        args = ["study", "--out", str(out), "--n", "2", "--tasks", "moving_direction", "--samples", "all",
                "--analyses", ",".join(analyses), "--window", "2", "--presets", "cross-frame,vql-to-ql", "--formats", "html",
                "--dtype", dtype, "--quiet"]
        assert main(args + (["--data", str(data)] if data else [])) == 0, capsys.readouterr().err
        data = data or out / "data" / "examples.jsonl"
        run = json.loads((out / "run.json").read_text())
        assert run["model"]["dtype"] == dtype
        assert {name: analysis["status"] for name, analysis in run["analyses"].items()} == dict.fromkeys(analyses, "done")
        for analysis in run["analyses"].values():
            _, records = read_records(out / analysis["record_file"])
            numbers = every_number(records)
            assert records and numbers, f"{dtype} {analysis['record_file']}: no records"
            assert all(math.isfinite(x) for x in numbers), f"{dtype} {analysis['record_file']}: non-finite numbers"
        _, records = read_records(out / "flow.jsonl")
        baseline = [r for r in records if r["kind"] == "baseline"]
        assert len(baseline) == 2 and len(records) > len(baseline)
        letters[dtype] = np.array([list(r["letter_probabilities"].values()) for r in baseline])
    # Two roundings of the same float32 model: within the bf16 bound of each other.
    assert np.abs(letters["bfloat16"] - letters["float16"]).max() <= PROBABILITY_VS_FP32[torch.bfloat16]

