"""Mini-InternVL-4B as published (InternVL-Chat layout, Phi-3 LM with LongRoPE), loaded by conversion.

The oracle is written here from the published architecture with transformers' native parts holding
the published weights under this file's own key mapping: `InternVLVisionModel` (InternViT),
pixel shuffle (InternVL's `ps_version` v2), `mlp1` as the published `nn.Sequential`, and
`Phi3ForCausalLM` for the language model, fed the prompt as InternVL's `phi3-chat` conversation
writes it for a video (`Frame{i}: <img><IMG_CONTEXT>*n</img>` per frame). Nothing of the converter
is used by the oracle. One checkpoint keeps the whole input below `original_max_position_embeddings`
(LongRoPE's short factors), the other puts it above (long factors).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from transformers import InternVLVisionConfig, InternVLVisionModel, Phi3Config, Phi3ForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

import tl_video
from tests.conftest import random_video
from tests.oracles import assert_half_precision_close, assert_same_prompt, max_diff, reference_model
from tests.parity import assert_greedy_matches_hf, assert_matches_hf, hf_chat_inputs
from tl_video.loading.checkpoint import CheckpointError
from tl_video.loading.published import cache_root, converted_checkpoint
from tl_video.model.rotary import RotaryEmbedding
from tl_video.testing.published_internvl_chat import save_published_internvl_chat

PROMPT = "What happens in the video?"
PHI3_CHAT_SYSTEM = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
# name -> (builder options, whether the 4-frame prompt (~290 tokens) crosses original_max_position_embeddings)
VARIANTS = {
    "short_factors": ({"original_max_position_embeddings": 1024}, False),
    "long_factors": ({"original_max_position_embeddings": 64, "num_key_value_heads": 2}, True),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("internvl_chat")
    return {name: save_published_internvl_chat(root / name, **options) for name, (options, _) in VARIANTS.items()}


# --------------------------------------------------------------------------- the oracle


def _published_weights(folder) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(load_file(folder / shard))
    return {key: value.float() for key, value in weights.items()}


def _internvit_to_hf(key: str) -> str:
    """One InternViT name (after `vision_model.`) in transformers' InternVLVisionModel naming."""
    key = key.replace("embeddings.class_embedding", "embeddings.cls_token")
    key = key.replace("embeddings.position_embedding", "embeddings.position_embeddings")
    key = key.replace("embeddings.patch_embedding", "embeddings.patch_embeddings.projection")
    key = key.replace("encoder.layers.", "encoder.layer.").replace(".ls1", ".lambda_1").replace(".ls2", ".lambda_2")
    key = key.replace(".attn.proj.", ".attention.projection_layer.").replace(".norm1.", ".layernorm_before.")
    return key.replace(".norm2.", ".layernorm_after.")


class PublishedInternVLChat(nn.Module):
    """InternVLChatModel.forward for one video: InternViT -> drop CLS -> pixel shuffle v2 -> mlp1 -> Phi-3."""

    def __init__(self, folder):
        super().__init__()
        config = json.loads((folder / "config.json").read_text())
        weights = _published_weights(folder)
        vision, llm = config["vision_config"], config["llm_config"]
        self.vision = InternVLVisionModel(InternVLVisionConfig(
            hidden_size=vision["hidden_size"], intermediate_size=vision["intermediate_size"],
            num_hidden_layers=vision["num_hidden_layers"], num_attention_heads=vision["num_attention_heads"],
            image_size=[config["force_image_size"]] * 2, patch_size=[vision["patch_size"]] * 2,
            attention_bias=vision["qkv_bias"], norm_type=vision["norm_type"], layer_norm_eps=vision["layer_norm_eps"],
            use_mean_pooling=True,
        )).eval()
        hidden = vision["hidden_size"]
        vision_state = {}
        for key, value in weights.items():
            if not key.startswith("vision_model."):
                continue
            key = _internvit_to_hf(key.removeprefix("vision_model."))
            if ".attn.qkv." in key:
                for name, part in zip(("query", "key", "value"), value.split(hidden)):
                    vision_state[key.replace(".attn.qkv.", f".attention.{name[0]}_proj.")] = part
            else:
                vision_state[key] = value
        self.vision.load_state_dict(vision_state, strict=True)
        width = hidden * 4
        self.mlp1 = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, llm["hidden_size"]), nn.GELU(),
                                  nn.Linear(llm["hidden_size"], llm["hidden_size"]))
        self.mlp1.load_state_dict({k.removeprefix("mlp1."): v for k, v in weights.items() if k.startswith("mlp1.")})
        scaling = llm["rope_scaling"]
        self.lm = Phi3ForCausalLM(Phi3Config(
            vocab_size=llm["vocab_size"], hidden_size=llm["hidden_size"], intermediate_size=llm["intermediate_size"],
            num_hidden_layers=llm["num_hidden_layers"], num_attention_heads=llm["num_attention_heads"],
            num_key_value_heads=llm["num_key_value_heads"], max_position_embeddings=llm["max_position_embeddings"],
            original_max_position_embeddings=llm["original_max_position_embeddings"],
            rms_norm_eps=llm["rms_norm_eps"], pad_token_id=llm["pad_token_id"], bos_token_id=llm["bos_token_id"],
            eos_token_id=llm["eos_token_id"], tie_word_embeddings=False,
            rope_parameters={"rope_type": "longrope", "rope_theta": llm["rope_theta"],
                             "short_factor": scaling["short_factor"], "long_factor": scaling["long_factor"],
                             "original_max_position_embeddings": llm["original_max_position_embeddings"]},
        )).eval()
        self.lm.set_attn_implementation("eager")
        self.lm.load_state_dict(
            {k.removeprefix("language_model."): v for k, v in weights.items() if k.startswith("language_model.")},
            strict=True,
        )
        self.context_id = config["img_context_token_id"]
        self.original_length = llm["original_max_position_embeddings"]

    def video_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.vision(pixel_values=pixel_values).last_hidden_state[:, 1:]
        frames, count, channels = patches.shape
        side = math.isqrt(count)
        grid = patches.reshape(frames, side, side, channels)
        # InternVLChatModel.pixel_shuffle(scale 0.5), ps_version v2: view, permute, view, permute back.
        x = grid.reshape(frames, side, side // 2, channels * 2).permute(0, 2, 1, 3)
        x = x.reshape(frames, side // 2, side // 2, channels * 4).permute(0, 2, 1, 3)
        return self.mlp1(x.reshape(frames, -1, channels * 4))

    def forward(self, input_ids, pixel_values, output_hidden_states=False, output_attentions=False, **_) -> CausalLMOutputWithPast:
        embeds = self.lm.get_input_embeddings()(input_ids).clone()
        placeholders = input_ids == self.context_id
        embeds[placeholders] = self.video_features(pixel_values).reshape(-1, embeds.shape[-1])
        return self.lm(inputs_embeds=embeds, output_hidden_states=output_hidden_states, output_attentions=output_attentions)


def published_prompt_ids(tokenizer, frames: int, tokens_per_frame: int, prompt: str) -> torch.Tensor:
    """InternVL's video chat: `Frame{i}: <image>\\n` per frame before the question, each `<image>` expanded
    to `<img><IMG_CONTEXT>*n</img>`, inside the phi3-chat conversation (MPT separators `<|end|>`)."""
    blocks = "".join(f"Frame{i + 1}: <img>{'<IMG_CONTEXT>' * tokens_per_frame}</img>\n" for i in range(frames))
    text = f"<|system|>\n{PHI3_CHAT_SYSTEM}<|end|><|user|>\n{blocks}{prompt}<|end|><|assistant|>\n"
    return torch.tensor([tokenizer(text)["input_ids"]])


def published_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """InternVL's `build_transform` for one tile per frame: bicubic resize to size x size, ImageNet normalisation."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    resized = [np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC)) for frame in frames]
    pixels = torch.tensor(np.stack(resized)).float().div(255).permute(0, 3, 1, 2)
    return (pixels - mean[:, None, None]) / std[:, None, None]


def _pair(folder):
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    return model, PublishedInternVLChat(folder)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_residuals_and_patterns_match_the_published_architecture(checkpoints, variant):
    model, oracle = _pair(checkpoints[variant])
    frames = random_video(0)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    processed = model.processor(text=prepared.text, videos=[frames], return_tensors="pt")
    ids = published_prompt_ids(model.tokenizer, 4, 16, PROMPT)
    assert_same_prompt(prepared.tokens, ids, oracle.context_id)
    crosses = ids.shape[1] > oracle.original_length
    assert crosses == VARIANTS[variant][1], f"{variant}: {ids.shape[1]} tokens vs original length {oracle.original_length}"
    inputs = {"input_ids": ids, "pixel_values": processed["pixel_values"]}
    assert_matches_hf(model, oracle, prepared, inputs, where=f"internvl_chat phi3 {variant} ({ids.shape[1]} tokens)")


def test_bfloat16_as_published_is_as_close_to_float32_as_the_published_architecture_in_bfloat16(checkpoints):
    """The checkpoint's own dtype: our bf16 run vs the oracle in fp32, bounded by the oracle's own bf16 error."""
    folder = checkpoints["long_factors"]
    model = tl_video.HookedVideoTransformer.from_pretrained(folder, dtype=torch.bfloat16)
    exact = PublishedInternVLChat(folder)
    half = PublishedInternVLChat(folder).to(torch.bfloat16)
    frames = random_video(6)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    pixels = model.processor(text=prepared.text, videos=[frames], return_tensors="pt")["pixel_values"]
    ids = published_prompt_ids(model.tokenizer, 4, 16, PROMPT)
    with torch.no_grad():
        ours = model(prepared.tokens)
        reference, reference_half = exact(ids, pixels).logits, half(ids, pixels.to(torch.bfloat16)).logits
    assert ours.dtype == torch.bfloat16
    assert_half_precision_close(ours, reference_half, reference, where="internvl_chat bf16")


def test_frames_are_prepared_as_internvl_prepares_them(checkpoints):
    """The converted processor's pixels are InternVL's bicubic 64x64 resize + ImageNet normalisation."""
    model, oracle = _pair(checkpoints["short_factors"])
    frames = random_video(1)
    processed = model.processor(text="<video>", videos=[frames], return_tensors="pt")
    assert max_diff(processed["pixel_values"], published_pixels(frames, 64)) < 0.05
    prepared = model.prepare(video=frames, prompt=PROMPT)
    with torch.no_grad():
        _, cache = model.run_with_cache(prepared.tokens, names_filter="hook_video_embed")
        expected = oracle.video_features(processed["pixel_values"]).flatten(0, 1)
    assert max_diff(cache["hook_video_embed"][0], expected) <= 1e-5


def test_a_clip_style_preprocessor_config_is_followed_shortest_edge_then_centre_crop(tmp_path):
    """InternVL 1.5 folders' preprocessor_config.json (the study's frames): resize the short side, crop the centre."""
    folder = save_published_internvl_chat(tmp_path / "clip", num_hidden_layers=1, with_preprocessor_config=True)
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    frames = random_video(2)  # 40 x 48: the short side goes to 64, the long one to int(76.8) = 76, then the centre 64
    pixels = model.processor(text="<video>", videos=[frames], return_tensors="pt")["pixel_values"]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    resized = np.stack([np.asarray(Image.fromarray(frame).resize((76, 64), Image.BICUBIC)) for frame in frames])
    left = (76 - 64) // 2
    expected = torch.tensor(resized[:, :, left : left + 64]).float().div(255).permute(0, 3, 1, 2)
    expected = (expected - mean[:, None, None]) / std[:, None, None]
    assert pixels.shape == (4, 3, 64, 64)
    assert max_diff(pixels, expected) < 0.05  # PIL's bicubic vs torchvision's: at most one intensity level


def test_greedy_generation_crossing_the_original_length_matches_hf(checkpoints, tmp_path):
    """Prefill below `original_max_position_embeddings`, decoding past it: both switch to long factors then."""
    frames = random_video(4)
    length = tl_video.HookedVideoTransformer.from_pretrained(checkpoints["short_factors"]).prepare(
        video=frames, prompt=PROMPT).tokens.shape[1]
    folder = save_published_internvl_chat(tmp_path / "crossing", original_max_position_embeddings=length + 3)
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    hf = reference_model(_converted(folder))
    processed = hf_chat_inputs(model.processor, frames, PROMPT)
    assert_greedy_matches_hf(model, hf, prepared, processed)


def _converted(folder):
    """The cached native folder `from_pretrained` converted `folder` into."""
    return converted_checkpoint(folder, json.loads((folder / "config.json").read_text()))


def test_longrope_cos_sin_equal_hf_on_both_sides_of_the_original_length(checkpoints):
    model, oracle = _pair(checkpoints["long_factors"])
    hf_rotary = oracle.lm.model.rotary_emb
    for length in (64, 65, 200):
        positions = torch.arange(length)[None]
        cos, sin = model.rotary(positions, torch.float32)
        hf_cos, hf_sin = hf_rotary(torch.zeros(1, dtype=torch.float32), positions)
        assert torch.equal(cos, hf_cos) and torch.equal(sin, hf_sin), f"cos/sin differ at length {length}"
    assert isinstance(model.rotary, RotaryEmbedding)


def test_converted_folder_is_native_and_keeps_dtype_and_shards(checkpoints):
    tl_video.HookedVideoTransformer.from_pretrained(checkpoints["long_factors"])
    folder = _converted(checkpoints["long_factors"])
    assert folder.parent == cache_root()
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["InternVLForConditionalGeneration"]
    assert config["text_config"]["model_type"] == "phi3"
    assert config["text_config"]["rope_parameters"]["rope_type"] == "longrope"
    assert config["text_config"]["rope_parameters"]["original_max_position_embeddings"] == 64
    assert "auto_map" not in config and not list(folder.glob("*.py"))
    shards = sorted(path.name for path in folder.glob("*.safetensors"))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert {tensor.dtype for shard in shards for tensor in load_file(folder / shard).values()} == {torch.bfloat16}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(ps_version="v1"), "ps_version 'v1'"),
        (lambda c: c["llm_config"].update(architectures=["InternLM2ForCausalLM"]), "InternLM2ForCausalLM"),
        (lambda c: c.update(use_llm_lora=16), "unmerged LoRA"),
        (lambda c: c["llm_config"].update(sliding_window=128), "sliding window of 128 tokens"),
        (lambda c: c.update(template="internlm2-chat"), "'internlm2-chat'"),
    ],
)
def test_unsupported_published_settings_are_one_clear_error(tmp_path, edit, message):
    folder = save_published_internvl_chat(tmp_path / "edited", num_hidden_layers=1)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        tl_video.HookedVideoTransformer.from_pretrained(folder)


def test_remote_code_yarn_variant_keeps_its_own_attention_scaling():
    """Phi-3's remote `yarn` LongRoPE scales cos/sin by 0.1 ln(s) + 1, which transformers reads as attention_factor."""
    from tl_video.loading.published_internvl_chat import text_config

    llm = {"architectures": ["Phi3ForCausalLM"], "max_position_embeddings": 8192, "original_max_position_embeddings": 1024,
           "rope_scaling": {"type": "yarn", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4}}
    rope = text_config(None, {"llm_config": llm})["rope_parameters"]
    assert rope["rope_type"] == "longrope" and rope["original_max_position_embeddings"] == 1024
    assert rope["attention_factor"] == pytest.approx(0.1 * math.log(8) + 1.0)
    su = text_config(None, {"llm_config": {**llm, "rope_scaling": {**llm["rope_scaling"], "type": "su"}}})
    assert "attention_factor" not in su["rope_parameters"]  # transformers' sqrt(1 + ln s / ln L), as the remote `su`


def test_partial_rotary_longrope_is_refused_in_one_line():
    from tl_video.model.config import VideoTransformerConfig

    cfg = VideoTransformerConfig(
        d_model=32, d_head=8, n_layers=1, n_heads=4, d_mlp=64, d_vocab=10, n_ctx=64,
        rope_parameters={"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 4,
                         "long_factor": [2.0] * 4, "original_max_position_embeddings": 16, "partial_rotary_factor": 0.5},
    )
    with pytest.raises(ValueError, match="partial_rotary_factor=0.5"):
        RotaryEmbedding(cfg)
