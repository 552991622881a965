"""LoRA adapters merged at load time: `from_pretrained(base, lora_adapter=folder)` vs a hand-updated HF model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlavaForConditionalGeneration

import tl_video
from tests.conftest import random_video
from tests.test_parity_pllava import spliced_inputs
from tests.tolerances import LOGITS_FP32
from tl_video.loading import CheckpointError
from tl_video.testing import save_tiny_pllava

PROMPT = "What happens in the video?"
# How PEFT names the wrapped model's LM modules: transformers 4.x LLaVA, 5.x LLaVA, a bare Llama LM.
LM_PREFIXES = {
    "llava_4x": "language_model.model.",
    "llava_5x": "model.language_model.",
    "bare_llama": "model.",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_pllava(tmp_path_factory.mktemp("lora") / "base")


def write_adapter(
    folder: Path, *, r: int = 4, alpha: float = 8.0, targets=("q_proj", "v_proj"), layers=(0, 1),
    prefix: str = "language_model.model.", seed: int = 0, sizes=None, **config,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A PEFT-format adapter folder; returns {'layers.l.self_attn.x': (A, B)} as written."""
    sizes = sizes or {"q_proj": (64, 64), "k_proj": (64, 64), "v_proj": (64, 64), "o_proj": (64, 64)}
    generator = torch.Generator().manual_seed(seed)
    tensors, pairs = {}, {}
    for layer in layers:
        for target in targets:
            out_features, in_features = sizes.get(target, (64, 64))
            a = torch.randn(r, in_features, generator=generator) / in_features**0.5
            b = torch.randn(out_features, r, generator=generator) * 0.3  # PEFT starts B at 0; a trained B is not
            module = f"layers.{layer}.self_attn.{target}"
            tensors[f"base_model.model.{prefix}{module}.lora_A.weight"] = a
            tensors[f"base_model.model.{prefix}{module}.lora_B.weight"] = b
            pairs[module] = (a, b)
    folder.mkdir(parents=True, exist_ok=True)
    adapter_config = {
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(targets), "bias": "none",
        "lora_dropout": 0.05, "task_type": "CAUSAL_LM", "base_model_name_or_path": "llava-hf/llava-v1.6-vicuna-7b-hf",
        **config,
    }
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    save_file(tensors, folder / "adapter_model.safetensors")
    return pairs


def hand_merged_hf(base: Path, pairs, scale: float | dict[str, float]) -> LlavaForConditionalGeneration:
    """The base HF model with W += scale * B A applied by hand to each adapted module."""
    hf = LlavaForConditionalGeneration.from_pretrained(base).eval()
    hf.set_attn_implementation("eager")
    layers = hf.model.language_model.layers
    with torch.no_grad():
        for module, (a, b) in pairs.items():
            _, layer, _, target = module.split(".")
            linear = getattr(layers[int(layer)].self_attn, target)
            linear.weight += (scale[module] if isinstance(scale, dict) else scale) * (b @ a)
    return hf


def logits_of(model, hf, video_seed: int):
    frames = random_video(video_seed)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    _, _, embeds = spliced_inputs(hf, model.tokenizer, frames)  # the oracle builds HF's input from the raw frames
    with torch.no_grad():
        return model(prepared.tokens), hf(inputs_embeds=embeds).logits


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("layout", list(LM_PREFIXES))
def test_merged_adapter_matches_hand_updated_hf(base, tmp_path, layout):
    pairs = write_adapter(tmp_path / "adapter", prefix=LM_PREFIXES[layout])
    model = tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=tmp_path / "adapter", keep_hf_model=True)
    hf = hand_merged_hf(base, pairs, scale=8.0 / 4)
    ours, reference = logits_of(model, hf, video_seed=31)
    assert max_diff(ours, reference) <= LOGITS_FP32, f"{layout}: logits differ by {max_diff(ours, reference):.2e}"
    # the adapter matters: the unmerged base model is far away
    plain = tl_video.HookedVideoTransformer.from_pretrained(base)
    prepared = plain.prepare(video=random_video(31), prompt=PROMPT)
    with torch.no_grad():
        assert max_diff(plain(prepared.tokens), reference) > 1e-2
    # the HF model kept for parity carries the merged weights too
    kept = model.hf_model[0].model.language_model.layers[1].self_attn.v_proj.weight
    assert torch.allclose(kept, hf.model.language_model.layers[1].self_attn.v_proj.weight, atol=1e-6)
    # our backbone's W_Q holds the merged q_proj
    q = hf.model.language_model.layers[0].self_attn.q_proj.weight
    assert torch.allclose(model.blocks[0].attn.W_Q, q.T.reshape(64, 4, 16).permute(1, 0, 2), atol=1e-6)


def test_rslora_and_rank_pattern_scale_per_module(base, tmp_path):
    """use_rslora scales by alpha/sqrt(r); rank_pattern/alpha_pattern override per module (PEFT's rule)."""
    folder = tmp_path / "adapter"
    pairs = write_adapter(folder, r=4, alpha=8.0, targets=("q_proj",), use_rslora=True, alpha_pattern={"layers.1.self_attn.q_proj": 2.0})
    model = tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=folder)
    scales = {"layers.0.self_attn.q_proj": 8.0 / 4**0.5, "layers.1.self_attn.q_proj": 2.0 / 4**0.5}
    hf = hand_merged_hf(base, pairs, scale=scales)
    ours, reference = logits_of(model, hf, video_seed=32)
    assert max_diff(ours, reference) <= LOGITS_FP32


def test_adapter_for_modules_that_do_not_exist_is_refused(base, tmp_path):
    folder = tmp_path / "wrong_names"
    write_adapter(folder, targets=("q_proj", "query_key_value"))
    with pytest.raises(CheckpointError, match=r"target_modules \['query_key_value'\] match no module.*q_proj"):
        tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=folder)


def test_adapter_for_more_layers_than_the_model_has_is_refused(base, tmp_path):
    folder = tmp_path / "deeper"
    write_adapter(folder, layers=(0, 1, 2, 3))  # the tiny LM has 2 layers
    with pytest.raises(CheckpointError, match=r"targets 4 modules the language model does not have.*layers\.2\.self_attn"):
        tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=folder)


def test_adapter_for_the_vision_tower_is_refused(base, tmp_path):
    folder = tmp_path / "vision"
    write_adapter(folder, prefix="vision_tower.vision_model.encoder.", layers=(0,), sizes={"q_proj": (32, 32), "v_proj": (32, 32)})
    with pytest.raises(CheckpointError, match="does not have.*vision_tower"):
        tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=folder)


def test_adapter_of_another_rank_or_size_is_refused(base, tmp_path):
    folder = tmp_path / "rank"
    write_adapter(folder, r=4)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(CheckpointError, match=r"with r=8 needs A \(8, 64\)"):
        tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"use_dora": True}, "use_dora=true is not supported"),
        ({"modules_to_save": ["multi_modal_projector"]}, "modules_to_save"),
        ({"peft_type": "IA3"}, "not a LoRA adapter"),
    ],
)
def test_adapter_options_that_cannot_be_merged_are_refused(base, tmp_path, change, message):
    folder = tmp_path / "adapter"
    write_adapter(folder, **change)
    with pytest.raises(CheckpointError, match=message):
        tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=folder)


def test_adapter_folder_without_files_is_refused(base, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="no adapter_config.json"):
        tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=folder)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    (folder / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no adapter_model.safetensors \(found only the pickle"):
        tl_video.HookedVideoTransformer.from_pretrained(base, lora_adapter=folder)
