"""PLLaVA / LLaVA-NeXT-Video-FT checkpoints as published, and the ImageLLM baseline, vs HF (logits, residuals, patterns).

Each tiny checkpoint is written the way the published one is on disk (tl_video.testing.published_pllava):
PLLaVA's own config.json, bfloat16 shards with an index, 4.x or 5.x tensor names, LoRA stored
PEFT-wrapped, a CLIP image processor only. The oracle, built from the raw frames and the prompt:
PLLaVA's frame preparation written out here with PIL (`pllava_pixels`: every frame resized alike,
then HF's CLIP image processor), PLLaVA's projector-then-pool on the HF modules
(`pllava_reference_video_features`), and an HF model loaded on its own (from the published folder
where transformers can read it, else from the builder's plain base folder with the LoRA merged here,
W + scale * B A) run on `inputs_embeds` holding those features at the `<image>` rows.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

import tl_video
from tests.conftest import random_video
from tests.oracles import max_diff
from tests.parity import assert_matches_hf
from tl_video.loading import CheckpointError
from tl_video.loading.published import cache_root
from tl_video.testing import pllava_reference_video_features
from tl_video.testing.published_pllava import save_published_llava_next, save_published_pllava

PROMPT = "What happens in the video?"
PLLAVA_TEXT = f"<s>USER: <image>\n{PROMPT} ASSISTANT:"  # the prompt as a PLLaVA user writes it
LORA = {"r": 4, "lora_alpha": 8.0, "target_modules": ("q_proj", "v_proj")}
# name -> (builder options, from_pretrained options, the LoRA scaling the oracle applies)
FORMATS = {
    "pllava_4x": ({}, {}, None),
    "llava_arch_5x": ({"architecture": "LlavaForConditionalGeneration", "layout": "5.x"}, {}, None),
    "pllava_4x_pooling_override": ({}, {"pooling_shape": (2, 3, 3)}, None),
    "llava_arch_5x_pooling_override": ({"architecture": "LlavaForConditionalGeneration", "layout": "5.x"},
                                       {"pooling_shape": (2, 2, 2)}, None),  # native folder: no conversion
    "pllava_peft_lora_alpha": ({"lora": LORA}, {"lora_alpha": 8.0}, 8.0 / 4),
    "pllava_peft_lora_scaling": ({"lora": LORA, "layout": "5.x"}, {"lora_scaling": 0.5}, 0.5),
    "llava_arch_peft_adapter_config": (
        {"lora": LORA, "architecture": "LlavaForConditionalGeneration", "adapter_config": True}, {}, 8.0 / 4
    ),
}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published_pllava")
    return {name: save_published_pllava(root / name, **options) for name, (options, _, _) in FORMATS.items()}


@pytest.fixture(scope="module")
def llava_next(tmp_path_factory):
    return save_published_llava_next(tmp_path_factory.mktemp("llava_next") / "llava-v1.6-tiny")


def pllava_pixels(folder, frames: np.ndarray) -> torch.Tensor:
    """[1, T, 3, S, S]: PLLaVA's `resize_crop_longshort` for one clip (PIL bicubic to a common shortest
    edge: the frame's own, capped so the long edge is at most 640, at least CLIP's), then HF's CLIP
    image processor with the folder's preprocessor_config.json size, crop and normalisation."""
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    resolution = settings["size"]["shortest_edge"]
    height, width = frames.shape[1:3]
    rate = max(height, width) / min(height, width)
    short = max(min(min(height, width), int(min(640, max(height, width)) / rate)), resolution)
    long = int(short * max(height, width) / min(height, width))
    new_height, new_width = (long, short) if height > width else (short, long)
    resized = [np.array(Image.fromarray(frame).resize((new_width, new_height), Image.BICUBIC)) for frame in frames]
    keep = ("size", "crop_size", "image_mean", "image_std", "resample", "rescale_factor", "do_center_crop")
    clip = CLIPImageProcessorPil(**{key: settings[key] for key in keep})
    return clip(images=resized, return_tensors="pt")["pixel_values"][None]


def hf_embeds(hf, tokenizer, frames, pixels_folder, pooling_shape):
    """(ids, features, inputs_embeds): the prompt's `<image>` expanded by hand, PLLaVA features scattered there."""
    pixels = pllava_pixels(pixels_folder, frames)
    features = pllava_reference_video_features(hf, pixels, pooling_shape)[0]
    ids = tokenizer(PLLAVA_TEXT, return_tensors="pt")["input_ids"][0]
    image_id = hf.config.image_token_id
    at = int(torch.nonzero(ids == image_id).flatten())
    ids = torch.cat([ids[:at], torch.full((features.shape[0],), image_id), ids[at + 1:]])
    with torch.no_grad():
        embeds = hf.get_input_embeddings()(ids)[None]
        mask = (ids == image_id)[None, :, None].expand_as(embeds)
        embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
    return ids, features, embeds


def hand_merged(reference_folder, lora: dict, scale: float, dtype: torch.dtype) -> LlavaForConditionalGeneration:
    """HF's LLaVA from the plain base weights, each LoRA target set to W + scale * B A (rounded to the stored dtype)."""
    hf = LlavaForConditionalGeneration.from_pretrained(reference_folder, dtype=torch.float32).eval()
    layers = hf.model.language_model.layers
    with torch.no_grad():
        for module, (a, b) in lora.items():
            *_, layer, _, target = module.split(".")
            linear = getattr(layers[int(layer)].self_attn, target)
            merged = linear.weight + scale * (b.float() @ a.float())
            linear.weight.copy_(merged.to(dtype).float())
    return hf


def eager(hf):
    hf.set_attn_implementation({"": "eager", "text_config": "eager"})
    return hf


def check_parity(model, hf, tokenizer, frames, pixels_folder, pooling_shape, where):
    ids, features, embeds = hf_embeds(hf, tokenizer, frames, pixels_folder, pooling_shape)
    prepared = model.prepare(video=frames, prompt=PROMPT)  # through the checkpoint's Vicuna chat template
    text = ids != hf.config.image_token_id
    assert prepared.tokens.shape[1] == ids.shape[0]
    assert torch.equal(prepared.tokens[0, text], ids[text]), f"{where}: text tokens differ from the PLLaVA prompt's"
    _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
    assert max_diff(cache["hook_video_embed"][0], features) == 0.0, f"{where}: video tokens differ from PLLaVA's"
    return assert_matches_hf(model, hf, prepared, {"inputs_embeds": embeds}, where=where)


@pytest.mark.parametrize("name", list(FORMATS))
def test_published_pllava_matches_hf(published, name):
    _, options, scale = FORMATS[name]
    checkpoint = published[name]
    model = tl_video.HookedVideoTransformer.from_pretrained(checkpoint.folder, **options)
    if checkpoint.lora:  # transformers cannot read PEFT-wrapped names: the oracle merges by hand
        hf = hand_merged(checkpoint.reference, checkpoint.lora, scale, torch.bfloat16)
    else:  # transformers reads the published folder itself (PLLaVA's config.json, 4.x or 5.x names)
        hf = LlavaForConditionalGeneration.from_pretrained(checkpoint.folder, dtype=torch.float32).eval()
    pooling = options.get("pooling_shape") or hf.config.pooling_shape
    frames = random_video(41, frames=4, height=24, width=40)  # short side below CLIP's 32: PLLaVA upsizes first
    check_parity(model, eager(hf), model.processor.tokenizer, frames, checkpoint.folder, pooling, f"published {name}")
    assert model.frontend.pooling_shape == tuple(pooling)


def test_image_llava_next_through_pllava_pooling_matches_hf(llava_next):
    """The ImageLLM baseline: llava-v1.6 weights, PLLaVA's frame preparation and pooling, HF LLaVA-NeXT's modules."""
    model = tl_video.HookedVideoTransformer.from_pretrained(llava_next.folder, pooling_shape=(4, 2, 2))
    hf = eager(LlavaNextForConditionalGeneration.from_pretrained(llava_next.folder, dtype=torch.float32).eval())
    frames = random_video(42, frames=4, height=36, width=60)
    check_parity(model, hf, model.processor.tokenizer, frames, llava_next.folder, (4, 2, 2), "image LLaVA-NeXT + PLLaVA pooling")
    assert model.cfg.family == "pllava"


def test_separate_adapter_scaled_by_an_argument_over_a_published_checkpoint(published, tmp_path):
    """lora_adapter= on a converted PLLaVA save, its adapter_config.json's alpha replaced by lora_scaling=."""
    from safetensors.torch import save_file

    checkpoint = published["pllava_4x"]
    generator = torch.Generator().manual_seed(5)
    factors, tensors = {}, {}
    for layer in (0, 1):
        module = f"language_model.model.layers.{layer}.self_attn.q_proj"
        a, b = torch.randn(2, 64, generator=generator) / 8, torch.randn(64, 2, generator=generator) * 0.3
        tensors[f"base_model.model.{module}.lora_A.weight"], tensors[f"base_model.model.{module}.lora_B.weight"] = a, b
        factors[module] = (a, b)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file(tensors, adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 64, "target_modules": ["q_proj"], "bias": "none"}
    ))
    model = tl_video.HookedVideoTransformer.from_pretrained(checkpoint.folder, lora_adapter=adapter, lora_scaling=0.75)
    hf = eager(hand_merged(checkpoint.reference, factors, 0.75, torch.float32))  # merged in memory, in float32
    frames = random_video(43, frames=4, height=24, width=40)
    check_parity(model, hf, model.processor.tokenizer, frames, checkpoint.folder, hf.config.pooling_shape,
                 "published pllava_4x + adapter (lora_scaling)")


def test_image_llava_next_without_pooling_shape_says_to_pass_it(llava_next):
    with pytest.raises(CheckpointError, match=r"config.json: .*LlavaNextForConditionalGeneration.* pass pooling_shape=\(8, 12, 12\)"):
        tl_video.HookedVideoTransformer.from_pretrained(llava_next.folder)


def test_peft_wrapped_lora_without_a_scaling_is_refused(published):
    folder = published["pllava_peft_lora_alpha"].folder
    with pytest.raises(CheckpointError, match=r"PEFT-wrapped LoRA \(r=4\).*no adapter_config.json.*pass lora_alpha="):
        tl_video.HookedVideoTransformer.from_pretrained(folder)


def test_lora_options_without_lora_weights_are_refused(published):
    with pytest.raises(CheckpointError, match=r"no PEFT-wrapped LoRA weights.*lora_alpha= applies to those only"):
        tl_video.HookedVideoTransformer.from_pretrained(published["pllava_4x"].folder, lora_alpha=4)
    with pytest.raises(CheckpointError, match=r"holds no PEFT-wrapped LoRA weights; lora_alpha=/lora_scaling="):
        tl_video.HookedVideoTransformer.from_pretrained(published["llava_arch_5x"].folder, lora_scaling=0.5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pooling_shape": (8, 12)}, "pooling_shape must be three positive integers"),
        ({"pooling_shape": (0, 2, 2)}, "pooling_shape must be three positive integers"),
        ({"lora_alpha": 4, "lora_scaling": 0.1}, "not both"),
        ({"lora_alpha": -1}, "lora_alpha must be a positive number"),
    ],
)
def test_bad_options_are_refused(published, options, message):
    with pytest.raises(ValueError, match=message):
        tl_video.HookedVideoTransformer.from_pretrained(published["pllava_4x"].folder, **options)


def test_pooling_shape_on_another_family_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match=r"pooling_shape= applies to PLLaVA.*not to this llava_next_video"):
        tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint, pooling_shape=(2, 2, 2))


def test_conversion_is_cached_and_links_unchanged_shards(published):
    folder = published["pllava_4x"].folder
    tl_video.HookedVideoTransformer.from_pretrained(folder)
    before = sorted(path.name for path in cache_root().iterdir() if path.name.startswith("pllava-"))
    tl_video.HookedVideoTransformer.from_pretrained(folder)
    after = sorted(path.name for path in cache_root().iterdir() if path.name.startswith("pllava-"))
    assert before == after  # converted once
    converted = [cache_root() / name for name in after
                 if (cache_root() / name / "model-00001-of-00003.safetensors").resolve().parent == folder.resolve()]
    assert converted, "a PLLaVA full fine-tune needs only its config.json rewritten: its shards are linked"
    config = json.loads((converted[0] / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and "gradient_checkpointing" not in config
    assert all(os.path.islink(converted[0] / f"model-0000{k}-of-00003.safetensors") for k in (1, 2, 3))


def test_peft_wrapped_checkpoint_converts_to_merged_plain_names(published):
    checkpoint = published["pllava_peft_lora_alpha"]
    model = tl_video.HookedVideoTransformer.from_pretrained(checkpoint.folder, lora_alpha=8.0, keep_hf_model=True)
    hf = model.hf_model[0]
    a, b = checkpoint.lora["language_model.model.layers.1.self_attn.v_proj"]
    base = LlavaForConditionalGeneration.from_pretrained(checkpoint.reference).model.language_model
    expected = (base.layers[1].self_attn.v_proj.weight + 2.0 * (b.float() @ a.float())).to(torch.bfloat16).float()
    assert torch.equal(hf.model.language_model.layers[1].self_attn.v_proj.weight, expected)
    assert max_diff(expected, base.layers[1].self_attn.v_proj.weight) > 1e-2  # the LoRA delta matters
    untouched = hf.model.language_model.layers[1].self_attn.k_proj.weight
    assert torch.equal(untouched, base.layers[1].self_attn.k_proj.weight)
    assert math.prod(model.frontend.pooling_shape) == 16


def test_pllava_config_saved_as_differences_from_defaults_gets_them_back(tmp_path):
    """transformers 4.x writes only what differs from PllavaConfig's defaults; the native config spells them out."""
    from tl_video.loading.published_pllava import native_config

    config = {"architectures": ["PllavaForConditionalGeneration"], "model_type": "llava", "num_frames": 8,
              "text_config": {"model_type": "llama"}, "gradient_checkpointing": True}
    native = native_config(tmp_path, config, None)
    assert native["architectures"] == ["LlavaForConditionalGeneration"] and "gradient_checkpointing" not in native
    assert (native["pooling_shape"], native["pooling_method"], native["use_pooling"]) == ([8, 16, 16], "avg", True)
    assert (native["image_token_index"], native["vision_feature_layer"], native["vision_config"]["image_size"]) == (32000, -2, 336)
    assert native_config(tmp_path, config, (8, 12, 12))["pooling_shape"] == [8, 12, 12]


def lora_only_save(checkpoint, folder):
    """PLLaVA's save without DeepSpeed: only the `lora_` and `multi_modal_projector` tensors (projector changed by training)."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(checkpoint.folder, folder)
    for shard in sorted(folder.glob("model-*.safetensors")):
        kept = {key: value for key, value in load_file(shard).items() if "lora_" in key or "multi_modal_projector" in key}
        kept = {key: value * 1.5 if key.endswith("linear_2.weight") else value for key, value in kept.items()}
        save_file(kept, shard, metadata={"format": "pt"})
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"] = {key: file for key, file in index["weight_map"].items()
                           if "lora_" in key or "multi_modal_projector" in key}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def test_lora_only_save_needs_and_takes_its_base_model(published, tmp_path):
    """A save of the LoRA factors and projector alone is refused without base_model=, and matches HF with it."""
    checkpoint = published["pllava_peft_lora_alpha"]
    folder = lora_only_save(checkpoint, tmp_path / "lora_only")
    with pytest.raises(CheckpointError, match=r"LoRA factors without the weights they update.*pass base_model="):
        tl_video.HookedVideoTransformer.from_pretrained(folder, lora_alpha=8.0)
    model = tl_video.HookedVideoTransformer.from_pretrained(folder, lora_alpha=8.0, base_model=checkpoint.reference)
    hf = hand_merged(checkpoint.reference, checkpoint.lora, 8.0 / 4, torch.bfloat16)
    with torch.no_grad():  # the trained projector of the partial save replaces the base's
        linear_2 = hf.model.multi_modal_projector.linear_2.weight
        linear_2.copy_((linear_2.to(torch.bfloat16) * 1.5).float())
    frames = random_video(45, frames=4, height=24, width=40)
    check_parity(model, eager(hf), model.processor.tokenizer, frames, folder, hf.config.pooling_shape,
                 "published pllava LoRA-only save + base_model")
    with pytest.raises(CheckpointError, match=r"base_model= completes a PLLaVA save.*drop the argument"):
        tl_video.HookedVideoTransformer.from_pretrained(published["llava_arch_5x"].folder, base_model=checkpoint.reference)


def test_bfloat16_load_of_a_peft_wrapped_save_stays_close_to_float32(published):
    from tests.tolerances import LOGITS_BF16_VS_FP32

    folder = published["pllava_peft_lora_alpha"].folder
    exact = tl_video.HookedVideoTransformer.from_pretrained(folder, lora_alpha=8.0)
    half = tl_video.HookedVideoTransformer.from_pretrained(folder, lora_alpha=8.0, dtype=torch.bfloat16)
    frames = random_video(44, frames=4, height=24, width=40)
    with torch.no_grad():
        ours = half(half.prepare(video=frames, prompt=PROMPT).tokens)
        reference = exact(exact.prepare(video=frames, prompt=PROMPT).tokens)
    assert ours.dtype == torch.bfloat16
    assert max_diff(ours, reference) <= LOGITS_BF16_VS_FP32


@pytest.mark.parametrize("shape", [(2, 60, 20), (2, 400, 720), (2, 33, 33), (2, 24, 40)])
def test_frame_preparation_is_pllavas(published, shape):
    """Tall, long-edge-capped (720 > 640), square and small clips: the front end's pixels equal PLLaVA's written out."""
    from tl_video.frontend.pllava import pllava_frame_pixels

    folder = published["pllava_4x"].folder
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    frames = np.random.RandomState(sum(shape)).randint(0, 256, shape + (3,), dtype=np.uint8)
    ours = pllava_frame_pixels(model.processor.image_processor, frames)
    assert max_diff(ours, pllava_pixels(folder, frames)[0]) == 0.0
