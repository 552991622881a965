"""VideoLLaMA3 as published (`Videollama3Qwen2ForCausalLM`, remote code) loads by conversion and matches HF.

The checkpoint is the tiny builder's copy of the hub layout (bf16 shards, published key names,
remote-code config and processor files that raise if executed). The reference is transformers'
native `VideoLlama3ForConditionalGeneration`, built here from the published config.json and filled
from the published safetensors through this file's own key mapping (not the converter's), fed the
raw frames and prompt through a native processor configured here from the published processor files.
The prompt HF sees is also checked against the published template: per frame `Time t s:<image>`,
"," between frames, each `<image>` expanded to the frame's tokens, pruned tokens dropped as the
published model drops them.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    Qwen2Config,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

import tl_video
from tests.conftest import random_video
from tests.oracles import max_diff
from tests.parity import PROMPT, assert_greedy_matches_hf, assert_matches_hf, prepare_with_reference
from tests.tolerances import LOGITS_BF16_VS_FP32
from tl_video.loading import CheckpointError
from tl_video.loading.published_videollama3 import native_chat_template
from tl_video.testing import build_byte_tokenizer
from tl_video.testing.published_videollama3 import PUBLISHED_CHAT_TEMPLATE, save_published_videollama3

VARIANTS = {
    "7b_layout": {},  # untied, token compression on, 2 shards (as VideoLLaMA3-7B)
    "2b_layout_tied": {"tie_word_embeddings": True, "use_token_compression": False, "shards": 3},
}
TOKEN = 12  # pixels per merged token side (patch 6 x merge 2)
FRAMES = 4

# Published tensor name -> the native module path, by component (written from the two architectures).
REFERENCE_RENAMES = (
    (r"^model\.vision_encoder\.(embeddings|encoder|post_layernorm)\.", r"model.vision_model.\1."),
    (r"^model\.mm_projector\.readout\.([02])\.", r"model.projector.readout.\1."),
    (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
    (r"^lm_head\.weight$", "lm_head.weight"),
)
QWEN2_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "attention_dropout", "use_sliding_window", "tie_word_embeddings",
)
REFERENCE_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for content in message['content'] %}"
    "{% if content['type'] == 'video' %}<|video_pad|>\n{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published_videollama3")
    return {name: save_published_videollama3(root / name, **options) for name, options in VARIANTS.items()}


def reference_key(key: str) -> str:
    for pattern, replacement in REFERENCE_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise AssertionError(f"the published checkpoint has a tensor {key!r} outside the published architecture")


@lru_cache(maxsize=4)
def reference(folder: Path):
    """(native HF model in fp32 with eager LM attention, native processor), both from the published files."""
    published = json.loads((folder / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder, config=Qwen2Config(), trust_remote_code=False)
    vision = {k: v for k, v in published["vision_encoder_config"].items() if k != "model_type"}
    config = VideoLlama3Config(
        text_config={"model_type": "qwen2", **{field: published[field] for field in QWEN2_FIELDS}},
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        tie_word_embeddings=published["tie_word_embeddings"],
    )
    model = VideoLlama3ForConditionalGeneration(config)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state |= {reference_key(key): tensor.float() for key, tensor in load_file(folder / shard).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if published["tie_word_embeddings"] else set())
    model.tie_weights()
    model = model.float().eval()
    model.set_attn_implementation({"": "eager", "text_config": "eager"})

    images = json.loads((folder / "preprocessor_config.json").read_text())
    merges = json.loads((folder / "processor_config.json").read_text())
    patch, normalise = images["patch_size"], {"image_mean": images["image_mean"], "image_std": images["image_std"]}
    pixels = lambda merge: {  # noqa: E731 - the published budget counts tokens of (patch * merge)^2 pixels
        "shortest_edge": images["min_tokens"] * (patch * merge) ** 2, "longest_edge": images["max_tokens"] * (patch * merge) ** 2
    }
    processor = VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(
            size=pixels(merges["image_merge_size"]), patch_size=patch, merge_size=merges["image_merge_size"], **normalise
        ),
        tokenizer=tokenizer,
        video_processor=VideoLlama3VideoProcessor(
            size=pixels(merges["video_merge_size"]), patch_size=patch, merge_size=merges["video_merge_size"],
            use_token_compression=published["use_token_compression"], **normalise,
        ),
        chat_template=REFERENCE_TEMPLATE,
    )
    return model, processor


def partly_static(seed: int) -> np.ndarray:
    """4 frames of 3 x 4 merged tokens: frame 1 changes 2 tokens, frame 2 one, frame 3 none."""
    video = np.repeat(random_video(seed, frames=1, height=3 * TOKEN, width=4 * TOKEN), FRAMES, axis=0)
    noise = random_video(seed + 1000, frames=FRAMES, height=3 * TOKEN, width=4 * TOKEN)
    for frame, (row, col) in [(1, (0, 0)), (1, (2, 3)), (2, (1, 1))]:
        block = np.s_[row * TOKEN : (row + 1) * TOKEN, col * TOKEN : (col + 1) * TOKEN]
        video[frame:][(slice(None), *block)] = noise[frame][block]
    return video


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_published_checkpoint_matches_native_hf(checkpoints, variant):
    folder = checkpoints[variant]
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    hf, processor = reference(folder)
    prepared, processed = prepare_with_reference(model, processor, partly_static(1))
    expected_tokens = 12 + 2 + 1 + 1 if VARIANTS[variant].get("use_token_compression", True) else FRAMES * 12
    assert len(prepared.layout.video_positions) == expected_tokens
    assert_matches_hf(model, hf, prepared, processed, where=f"published videollama3 {variant}")
    assert_greedy_matches_hf(model, hf, prepared, processed)


@pytest.mark.parametrize("default_system", [None, "You are a helpful assistant."])
def test_prompt_equals_what_the_published_model_sees(tmp_path, default_system):
    """Our tokens == published template + `<image>` expansion + the published model's pruning.

    With `default_system` the published template adds a system turn a plain ChatML template would
    not: the converted template must keep it.
    """
    folder = save_published_videollama3(tmp_path / "published", default_system=default_system)
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    frames = partly_static(2)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    tokenizer = AutoTokenizer.from_pretrained(folder, config=Qwen2Config(), trust_remote_code=False)  # published template
    content = {"type": "video", "num_frames": FRAMES, "timestamps": [float(t) for t in range(FRAMES)]}
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [content, {"type": "text", "text": PROMPT}]}], tokenize=False, add_generation_prompt=True,
        image_token="<image>",  # what the published processor passes to its template
    )
    assert text.count("<image>") == FRAMES and "Time 0.0s:<image>,Time 1.0s:<image>," in text
    assert ("<|im_start|>system\n" in text) == (default_system is not None)
    ids = tokenizer(text.replace("<image>", "<image>" * 12), add_special_tokens=False)["input_ids"]
    image_id = json.loads((folder / "config.json").read_text())["image_token_index"]
    pixels = reference(folder)[1].video_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"]
    keep = published_compression_mask(pixels, merged_per_frame=12)
    assert keep.sum().item() == 12 + 2 + 1 + 1
    kept = iter(keep.tolist())
    published_ids = [token for token in ids if token != image_id or next(kept)]
    ours = prepared.tokens[0].tolist()
    video = set(prepared.layout.video_positions)
    assert len(ours) == len(published_ids)
    assert [i for i, token in enumerate(published_ids) if token == image_id] == sorted(video)
    assert [a for i, a in enumerate(ours) if i not in video] == [b for i, b in enumerate(published_ids) if i not in video]


def published_compression_mask(pixels: torch.Tensor, merged_per_frame: int, threshold: float = 0.1) -> torch.Tensor:
    """VideoLLaMA3's pruning as its published model computes it: per merged token, mean |Δpixel| x 255 > 0.1."""
    per_token = pixels.view(FRAMES, merged_per_frame, -1)
    change = (per_token[1:] - per_token[:-1]).abs().mean(-1) * 255
    keep = torch.cat([torch.ones(1, merged_per_frame, dtype=torch.bool), change > threshold])
    keep[keep.sum(1) == 0, 0] = True  # every frame keeps at least its first token
    return keep.flatten()


def test_conversion_is_cached_native_and_runs_no_remote_code(checkpoints):
    from tl_video.loading.published import converted_checkpoint

    folder = checkpoints["7b_layout"]
    config = json.loads((folder / "config.json").read_text())
    native = converted_checkpoint(folder, config)
    assert native != folder and converted_checkpoint(folder, config) == native
    native_config = json.loads((native / "config.json").read_text())
    assert native_config["architectures"] == ["VideoLlama3ForConditionalGeneration"] and "auto_map" not in native_config
    assert not list(native.glob("*.py"))
    index = json.loads((native / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert all(load_file(native / shard)[key].dtype == torch.bfloat16 for key, shard in list(index["weight_map"].items())[:5])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"vision_encoder": "DAMO-NLP-SG/SigLIP-NaViT", "with_vision_weights": False},
         r"config\.json has no vision_encoder_config and names the encoder 'DAMO-NLP-SG/SigLIP-NaViT' in field vision_encoder"),
        ({"with_vision_weights": False}, r"holds no model\.vision_encoder\.\* weights \(config\.json field vision_encoder"),
        ({"mm_projector_type": "linear"}, r"config\.json: mm_projector_type 'linear' is not supported"),
    ],
)
def test_unloadable_published_folders_are_named(tmp_path, options, message):
    folder = save_published_videollama3(tmp_path / "bad", **options)
    with pytest.raises(CheckpointError, match=message):
        tl_video.HookedVideoTransformer.from_pretrained(folder)


def published_frame_size(height: int, width: int, frames: int, patch: int, merge: int, min_tokens: int, max_tokens: int):
    """The published `Videollama3ImageProcessor` target size of a video's frames (`simple_batched_resize`)."""
    factor = patch * merge
    min_pixels, max_pixels = min_tokens * factor**2, max_tokens * factor**2 // frames
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    if h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


@pytest.mark.parametrize("shape", [(50, 70), (200, 300), (6, 9), (36, 48)])
def test_converted_video_processor_resizes_frames_as_published(checkpoints, shape):
    folder = checkpoints["7b_layout"]
    images = json.loads((folder / "preprocessor_config.json").read_text())
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    frames = random_video(3, frames=FRAMES, height=shape[0], width=shape[1])
    grid = model.processor.video_processor(videos=[frames], return_tensors="pt")["video_grid_thw"][0].tolist()
    patch = images["patch_size"]
    height, width = published_frame_size(*shape, FRAMES, patch, 2, images["min_tokens"], images["max_tokens"])
    assert grid == [FRAMES, height // patch, width // patch]


def test_training_layout_nested_vision_encoder_converts(tmp_path):
    """Checkpoints saved by the training code nest the tower once more: `model.vision_encoder.vision_encoder.*`."""
    folder = save_published_videollama3(tmp_path / "training_layout", vision_encoder="DAMO-NLP-SG/SigLIP-NaViT")
    config = json.loads((folder / "config.json").read_text())
    config["vision_encoder_config"] = json.loads(
        (save_published_videollama3(tmp_path / "hub_layout") / "config.json").read_text()
    )["vision_encoder_config"]
    (folder / "config.json").write_text(json.dumps(config))
    for shard in folder.glob("*.safetensors"):
        tensors = load_file(shard)
        renamed = {key.replace("model.vision_encoder.", "model.vision_encoder.vision_encoder."): v for key, v in tensors.items()}
        save_file(renamed, shard, metadata={"format": "pt"})
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"] = {
        key.replace("model.vision_encoder.", "model.vision_encoder.vision_encoder."): shard for key, shard in index["weight_map"].items()
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    nested = tl_video.HookedVideoTransformer.from_pretrained(folder)
    flat = tl_video.HookedVideoTransformer.from_pretrained(tmp_path / "hub_layout")
    frames = partly_static(4)
    with torch.no_grad():
        assert torch.equal(nested(nested.prepare(video=frames, prompt=PROMPT).tokens), flat(flat.prepare(video=frames, prompt=PROMPT).tokens))


def add_tensor(folder: Path, name: str) -> None:
    """One more tensor in the last shard, listed in the index."""
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    save_file({**load_file(folder / shard), name: torch.zeros(2, dtype=torch.bfloat16)}, folder / shard, metadata={"format": "pt"})
    index["weight_map"][name] = shard
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda folder: (folder / "preprocessor_config.json").unlink(), r"has no preprocessor_config\.json"),
        (lambda folder: add_tensor(folder, "model.extra_head.weight"), r"tensor 'model\.extra_head\.weight' is not part of"),
    ],
    ids=["no_image_processor_config", "foreign_tensor"],
)
def test_damaged_published_folders_are_named(tmp_path, edit, message):
    folder = save_published_videollama3(tmp_path / "damaged")
    edit(folder)
    with pytest.raises(CheckpointError, match=message):
        tl_video.HookedVideoTransformer.from_pretrained(folder)


def test_bfloat16_load_is_as_close_to_hf_float32_as_expected(checkpoints):
    """The published dtype: our bf16 run against HF fp32 on the same weights (tests/tolerances.py says why)."""
    folder = checkpoints["7b_layout"]
    model = tl_video.HookedVideoTransformer.from_pretrained(folder, dtype=torch.bfloat16)
    hf, processor = reference(folder)
    prepared, processed = prepare_with_reference(model, processor, partly_static(5))
    with torch.no_grad():
        ours, exact = model(prepared.tokens), hf(**processed).logits
    assert ours.dtype == torch.bfloat16
    assert max_diff(ours, exact) <= LOGITS_BF16_VS_FP32


MULTILINE_TEMPLATE = """
{% for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' -}}
    {% for content in message['content'] %}
        {% if content['type'] == 'video' %}
            {% for i in range(content['num_frames']) %}
                {{- 'Time ' + content['timestamps'][i] | round(1) | string + 's:' -}}
                {% if i < content['num_frames'] - 1 %}
                    {{- '<image>,' -}}
                {% else %}
                    {{- '<image>\\n' -}}
                {% endif %}
            {% endfor %}
        {% elif content['type'] == 'text' %}
            {{- content['text'] -}}
        {% endif %}
    {% endfor %}
    {{- '<|im_end|>\\n' -}}
{% endfor %}
{% if add_generation_prompt %}{{- '<|im_start|>assistant\\n' -}}{% endif %}
"""


@pytest.mark.parametrize(
    "template",
    [PUBLISHED_CHAT_TEMPLATE.replace("image_token + '", "'<image>"), MULTILINE_TEMPLATE],
    ids=["literal_image_token", "multiline_whitespace_control"],
)
def test_published_template_variants_convert_to_one_placeholder(template):
    """Whatever the template's spelling, the converted one renders the published text once expanded."""
    tokenizer = build_byte_tokenizer({"eos_token": "<|im_end|>"}, ["<|im_start|>", "<|image_pad|>", "<|video_pad|>", "<image>"])
    tokenizer.chat_template = template
    native = native_chat_template(Path("published"), tokenizer)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q?"}]}],
        chat_template=native, tokenize=False, add_generation_prompt=True,
    )
    published = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "num_frames": 2, "timestamps": [0.0, 2.0]}, {"type": "text", "text": "Q?"}]}],
        tokenize=False, add_generation_prompt=True, image_token="<image>",
    )
    assert "<|im_start|>user\n<|video_pad|>\nQ?<|im_end|>\n<|im_start|>assistant\n" in rendered
    assert rendered == published.replace("Time 0.0s:<image>,Time 2.0s:<image>", "<|video_pad|>")


def test_conversion_options_of_other_formats_are_refused(checkpoints):
    with pytest.raises(CheckpointError, match=r"takes no conversion options, got \['pooling_shape'\]"):
        tl_video.HookedVideoTransformer.from_pretrained(checkpoints["7b_layout"], pooling_shape=(2, 2, 2))
