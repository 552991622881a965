"""InternVL-Chat as published (`InternVLChatModel`, remote code) -> transformers' `InternVLForConditionalGeneration`.

OpenGVLab's InternVL 1.5/2 checkpoints (`OpenGVLab/Mini-InternVL-Chat-4B-V1-5`) and their fine-tunes
(`byminji/Mini-InternVL-4B-Video-FT`, the information-flow study's model) ship their own modelling
code (`auto_map`, model_type `internvl_chat`). config.json nests `vision_config` (InternViT) and
`llm_config` (here Phi-3-mini-128k: `Phi3ForCausalLM`, `rope_scaling` of type `su`/`longrope` with
`short_factor`/`long_factor`, `original_max_position_embeddings` at the top of `llm_config`) next to
`select_layer`, `downsample_ratio`, `ps_version` and `template` (`phi3-chat`). The weights (bf16,
sharded with an index) are `vision_model.*` (InternViT: fused `attn.qkv`, `ls1`/`ls2` layer scales),
`mlp1.{0,1,3}.*` (LayerNorm, Linear, GELU, Linear) and `language_model.model.*` /
`language_model.lm_head.*` (a Phi-3 with fused `qkv_proj` and `gate_up_proj`, kept fused: transformers'
Phi3 has the same names).

This module rewrites such a folder without running any of its code: renamed weights (InternViT's
`qkv` split into q/k/v rows, the same dtype and shard files), a native `InternVLConfig` whose text
config is a `Phi3Config` (LongRoPE moved into `rope_parameters`), and a native processor: the
published tokenizer with InternVL's image tokens named, image and video processors preparing every
frame at the published size with ImageNet normalisation (a square resize as InternVL's chat does, or
the folder's CLIP-style shortest-edge resize and centre crop when it carries a
preprocessor_config.json, as the study's evaluation does), and a chat template writing the
published `phi3-chat` conversation (`<|system|>\\n{system}<|end|><|user|>\\n...<|end|><|assistant|>\\n`)
in which the video becomes InternVL's per-frame blocks `Frame{i}: <img><IMG_CONTEXT>*n</img>`
(see `docs/families.md`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch

from tl_video.loading.checkpoint import CheckpointError, check_weight_files, error_summary, read_json_object
from tl_video.loading.published import PublishedFormat, rewrite_shards

ARCHITECTURE = "InternVLChatModel"
MODEL_TYPE = "internvl_chat"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# InternVL's `phi3-chat` conversation template's default system message (internvl/conversation.py).
PHI3_CHAT_SYSTEM = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"

# Published weight prefix -> native prefix, first match wins.
KEY_PREFIXES = (
    ("vision_model.", "model.vision_tower."),
    ("mlp1.0.", "model.multi_modal_projector.layer_norm."),
    ("mlp1.1.", "model.multi_modal_projector.linear_1."),
    ("mlp1.3.", "model.multi_modal_projector.linear_2."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
)
# InternViT module names -> transformers' InternVLVision names (applied to each dotted component).
VISION_NAMES = {
    "layers": "layer",
    "class_embedding": "cls_token",
    "position_embedding": "position_embeddings",
    "patch_embedding": "patch_embeddings.projection",
    "ls1": "lambda_1",
    "ls2": "lambda_2",
    "attn": "attention",
    "proj": "projection_layer",
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
}
# The language models the wrapper can hold whose weights transformers reads under the same names.
_LM_TYPES = {"Phi3ForCausalLM": "phi3", "LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
# llm_config keys that describe the remote code or the file, not the language model.
_NOT_TEXT_KEYS = {
    "architectures", "auto_map", "_name_or_path", "attn_implementation", "_attn_implementation",
    "_attn_implementation_autoset", "use_bfloat16", "torch_dtype", "dtype", "transformers_version",
    "rope_scaling", "model_type",
}


def accepts(config: dict[str, Any]) -> bool:
    """A published InternVL-Chat folder: its own model_type or architecture name."""
    return config.get("model_type") == MODEL_TYPE or ARCHITECTURE in (config.get("architectures") or [])


def convert(source: Path, destination: Path, options: dict[str, Any]) -> None:
    """Write the native checkpoint of the published folder `source` into the empty folder `destination`."""
    config = read_json_object(source / "config.json")
    _check_wrapper(source, config)
    text = text_config(source, config)
    check_weight_files(source)
    tokenizer = _tokenizer(source, config)
    _write_weights(source, destination, config)
    _write_config(destination, config, text, tokenizer)
    _write_processor(source, destination, config, tokenizer)


def native_key(key: str) -> str | None:
    """The native name of a published tensor, or None for a name the published architecture does not have."""
    for published, native in KEY_PREFIXES:
        if key.startswith(published):
            rest = key[len(published) :]
            if published == "vision_model.":
                rest = ".".join(VISION_NAMES.get(part, part) for part in rest.split("."))
            return native + rest
    return None


def text_config(source: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The native text config dict of `llm_config`: model_type set, LongRoPE as transformers 5 reads it.

    The published Phi-3 keeps `original_max_position_embeddings` beside `rope_scaling`
    ({type: su|longrope|yarn, short_factor, long_factor}); transformers wants it inside
    `rope_parameters` with rope_type `longrope`. The remote code's `yarn` variant scales cos/sin by
    0.1 ln(s) + 1 instead of LongRoPE's sqrt(1 + ln s / ln L), so that value is written as
    `attention_factor` (s = max_position_embeddings / original_max_position_embeddings, L the latter).
    """
    llm = config.get("llm_config")
    if not isinstance(llm, dict) or not llm:
        raise CheckpointError(f"{source}/config.json has no llm_config; it is not an InternVL-Chat checkpoint")
    architecture = (llm.get("architectures") or [None])[0]
    if architecture not in _LM_TYPES:
        raise CheckpointError(
            f"{source}/config.json: llm_config.architectures {architecture!r} is not supported; the InternVL-Chat "
            f"conversion handles {', '.join(_LM_TYPES)} (InternLM2's fused wqkv is not converted)"
        )
    text = {key: value for key, value in llm.items() if key not in _NOT_TEXT_KEYS}
    text["model_type"] = _LM_TYPES[architecture]
    scaling = llm.get("rope_scaling")
    rope: dict[str, Any] = {"rope_theta": float(llm.get("rope_theta", 10000.0))}
    if isinstance(scaling, dict) and scaling:
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind in ("su", "longrope", "yarn") and "short_factor" in scaling:
            original = scaling.get("original_max_position_embeddings") or llm.get("original_max_position_embeddings")
            if not original:
                raise CheckpointError(
                    f"{source}/config.json: llm_config.rope_scaling is LongRoPE but no original_max_position_embeddings "
                    "is given (neither inside rope_scaling nor in llm_config)"
                )
            rope.update(
                rope_type="longrope", short_factor=list(scaling["short_factor"]),
                long_factor=list(scaling["long_factor"]), original_max_position_embeddings=int(original),
            )
            # Phi3Config also reads the top-level field (default 4096) when it builds the LongRoPE scaling
            text["original_max_position_embeddings"] = int(original)
            if kind == "yarn":
                scale = llm["max_position_embeddings"] / int(original)
                rope["attention_factor"] = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
            for key in ("attention_factor", "factor"):
                if key in scaling:
                    rope[key] = scaling[key]
        else:
            rope.update({key: value for key, value in scaling.items() if key != "type"}, rope_type=kind)
    else:
        rope["rope_type"] = "default"
    text["rope_parameters"] = rope
    return text


def _check_wrapper(source: Path, config: dict[str, Any]) -> None:
    """Refuse what the native class cannot express: v1 pixel shuffle, unmerged LoRA, no vision config."""
    if not isinstance(config.get("vision_config"), dict):
        raise CheckpointError(f"{source}/config.json has no vision_config; it is not an InternVL-Chat checkpoint")
    version = config.get("ps_version", "v1")
    if version != "v2":
        raise CheckpointError(
            f"{source}/config.json: ps_version {version!r} pixel-shuffles into a transposed grid, which transformers' "
            "InternVL does not implement; only ps_version 'v2' checkpoints (InternVL 1.5 and later) convert"
        )
    lora = {key: config.get(key) for key in ("use_backbone_lora", "use_llm_lora") if config.get(key)}
    if lora:
        raise CheckpointError(
            f"{source}/config.json sets {lora}: the weights hold unmerged LoRA layers; merge them into the base "
            "weights (peft merge_and_unload) and save with use_backbone_lora=0, use_llm_lora=0"
        )


def _vision_config(config: dict[str, Any]) -> dict[str, Any]:
    vision = config["vision_config"]
    size = int(config.get("force_image_size") or vision.get("image_size", 448))
    patch = int(vision.get("patch_size", 14))
    return {
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "num_hidden_layers": vision["num_hidden_layers"],
        "num_attention_heads": vision["num_attention_heads"],
        "num_channels": vision.get("num_channels", 3),
        "image_size": [size, size],
        "patch_size": [patch, patch],
        "attention_bias": bool(vision.get("qkv_bias", True)),
        "use_qk_norm": bool(vision.get("qk_normalization", False)),
        "norm_type": vision.get("norm_type", "rms_norm"),
        "layer_norm_eps": vision.get("layer_norm_eps", 1e-6),
        "hidden_act": vision.get("hidden_act", "gelu"),
        "use_absolute_position_embeddings": True,
        "use_mean_pooling": True,  # InternViT has no final norm; transformers' tower then ends in Identity
    }


def _write_weights(source: Path, destination: Path, config: dict[str, Any]) -> None:
    """Every source shard rewritten under the same file name with native keys, dtype unchanged; a new index."""
    hidden = int(config["vision_config"]["hidden_size"])

    def rewrite(shard: Path, key: str, load: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        if key.endswith("rotary_emb.inv_freq"):  # a buffer old remote code saved; recomputed from the config
            return {}
        new = native_key(key)
        if new is None or "lora_" in key:
            raise CheckpointError(
                f"{shard}: tensor {key!r} is not part of {ARCHITECTURE} (expected vision_model.*, "
                "mlp1.{0,1,3}.*, language_model.model.*, language_model.lm_head.*); remove it or use the "
                "published files"
            )
        tensor = load()
        if ".attention.qkv." not in new:
            return {new: tensor}
        if tensor.shape[0] != 3 * hidden:  # InternViT: rows are q, then k, then v (InternAttention's reshape)
            raise CheckpointError(
                f"{shard}: {key!r} has {tensor.shape[0]} rows, expected 3 x vision hidden_size "
                f"{hidden}; the weights and config.json belong to different models"
            )
        return {new.replace(".qkv.", f".{name}_proj."): part.contiguous() for name, part in zip("qkv", tensor.split(hidden, dim=0))}

    weight_map = rewrite_shards(source, destination, rewrite)
    for prefix, what in (("model.vision_tower.", "vision_model.*"), ("model.multi_modal_projector.", "mlp1.*")):
        if not any(key.startswith(prefix) for key in weight_map):
            raise CheckpointError(
                f"{source} holds no {what} weights; the folder keeps only part of the model (a fine-tune saving its "
                "trained weights only?): copy the missing tensors from the base checkpoint into it"
            )


def _tokenizer(source: Path, config: dict[str, Any]) -> Any:
    """The published tokenizer, with InternVL's image tokens named the way `InternVLProcessor` reads them."""
    from transformers import AutoTokenizer

    named = {
        "start_image_token": "<img>", "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>",
    }
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, extra_special_tokens=named)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{source}: the tokenizer could not be read without remote code ({error_summary(error)}); copy the "
            "published tokenizer files (tokenizer.model or tokenizer.json, tokenizer_config.json) into the folder"
        ) from error
    for token in ("<img>", "</img>", "<IMG_CONTEXT>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise CheckpointError(f"{source}: the tokenizer has no {token} token; use the published tokenizer files")
    published_id = config.get("img_context_token_id")
    context_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    if published_id is not None and published_id != context_id:
        raise CheckpointError(
            f"{source}/config.json: img_context_token_id {published_id} but the tokenizer's <IMG_CONTEXT> is "
            f"{context_id}; the tokenizer does not belong to this checkpoint"
        )
    # `<video>` is only the prompt placeholder the processor expands into frame blocks; it never reaches the model.
    tokenizer.add_tokens(["<video>"], special_tokens=True)
    return tokenizer


def _image_seq_length(config: dict[str, Any]) -> int:
    vision = _vision_config(config)
    side = vision["image_size"][0] // vision["patch_size"][0]
    return int(side * side * float(config.get("downsample_ratio", 0.5)) ** 2)


def _write_config(destination: Path, config: dict[str, Any], text: dict[str, Any], tokenizer: Any) -> None:
    from transformers import InternVLConfig

    native = InternVLConfig(
        text_config=text,
        vision_config=_vision_config(config),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=_image_seq_length(config),
        downsample_ratio=float(config.get("downsample_ratio", 0.5)),
        projector_hidden_act="gelu",
        vision_feature_layer=int(config.get("select_layer", -1)),
        vision_feature_select_strategy="default",  # InternVL-Chat drops the CLS token
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
    )
    native.architectures = ["InternVLForConditionalGeneration"]
    dtype = config.get("torch_dtype") or config.get("dtype") or config["llm_config"].get("torch_dtype")
    if dtype:
        native.dtype = dtype
    native.save_pretrained(destination)


def phi3_chat_template(system_message: str) -> str:
    """InternVL's `phi3-chat` conversation as a chat template; a video is one `<video>` the processor expands.

    `<|system|>\\n{system}<|end|>` then `<|user|>\\n{content}<|end|>` / `<|assistant|>\\n{content}<|end|>`
    per turn (the MPT separator style: no newline after `<|end|>`), then `<|assistant|>\\n`. The
    video is written `<video>\\n` before the text, which the processor turns into
    `Frame1: <img>...</img>\\nFrame2: ...</img>\\n`, the prefix InternVL's own video chat writes.
    """
    default = json.dumps(system_message)
    return (
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% if messages[0]['content'] is string %}{% set system = messages[0]['content'] %}"
        "{% else %}{% set system = messages[0]['content'] | selectattr('type', 'equalto', 'text') "
        "| map(attribute='text') | join('') %}{% endif %}"
        "{% set turns = messages[1:] %}"
        "{% else %}{% set system = " + default + " %}{% set turns = messages %}{% endif %}"
        "{{ '<|system|>\\n' + system + '<|end|>' }}"
        "{% for message in turns %}{{ '<|' + message['role'] + '|>\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for content in message['content'] %}"
        "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
        "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
        "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}{% endif %}{{ '<|end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    )


def _frame_processing(source: Path, size: int, square: dict[str, Any]) -> dict[str, Any]:
    """How each video frame is prepared: the folder's CLIP-style preprocessor_config.json if it has one, else a square.

    InternVL's own chat code resizes every frame to size x size and ignores preprocessor_config.json;
    the InternVL 1.5 folders carry a CLIP-style one (shortest edge to `size`, centre crop `crop_size`,
    ImageNet mean/std), which is what the information-flow study's evaluation uses. When present it
    is followed (so the frames are the study's), otherwise the square resize of InternVL's chat.
    """
    path = source / "preprocessor_config.json"
    if not path.is_file():
        return square
    published = read_json_object(path)
    if not published.get("do_center_crop"):
        return {**square, "image_mean": published.get("image_mean", IMAGENET_MEAN), "image_std": published.get("image_std", IMAGENET_STD)}

    def edge(value: Any, key: str) -> int:
        return int(value.get(key) or value.get("height")) if isinstance(value, dict) else int(value)

    shortest, crop = edge(published.get("size", size), "shortest_edge"), edge(published.get("crop_size", size), "height")
    if crop != size:
        raise CheckpointError(
            f"{path}: crop_size {crop} differs from the model's image size {size} (config.json force_image_size); "
            "the vision tower would see another grid than it was trained on: fix one of them"
        )
    return {
        "size": {"shortest_edge": shortest}, "do_center_crop": True, "crop_size": {"height": crop, "width": crop},
        "image_mean": published.get("image_mean", IMAGENET_MEAN), "image_std": published.get("image_std", IMAGENET_STD),
        "resample": published.get("resample", 3),
    }


def _write_processor(source: Path, destination: Path, config: dict[str, Any], tokenizer: Any) -> None:
    """Native processors: frames prepared as `_frame_processing` says; the phi3-chat template."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    template = config.get("template")
    if template not in (None, "phi3-chat"):
        raise CheckpointError(
            f"config.json: conversation template {template!r} is not supported; the InternVL-Chat conversion writes "
            "the 'phi3-chat' template (Mini-InternVL-Chat-4B-V1-5 and its fine-tunes)"
        )
    size = _vision_config(config)["image_size"][0]
    common = {"size": {"height": size, "width": size}, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3}
    system = config.get("system_message")
    chat_template = phi3_chat_template(PHI3_CHAT_SYSTEM if system is None else system)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(crop_to_patches=False, **common),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(**_frame_processing(source, size, common)),
        image_seq_length=_image_seq_length(config),
        chat_template=chat_template,
    )
    tokenizer.chat_template = None
    processor.save_pretrained(destination)


PUBLISHED_INTERNVL_CHAT = PublishedFormat(name="internvl_chat", accepts=accepts, convert=convert, version=2)
