"""VideoLLaMA3 as published (`Videollama3Qwen2ForCausalLM`, remote code) -> transformers' `VideoLlama3ForConditionalGeneration`.

The hub checkpoints `DAMO-NLP-SG/VideoLLaMA3-7B` and `-2B` ship their own modelling code (`auto_map`,
model_type `videollama3_qwen2`): a `Qwen2ForCausalLM` whose config.json holds the Qwen2 fields at
the top level plus `vision_encoder_config` (the SigLIP-NaViT tower), `mm_projector_type`
(`mlp2x_gelu`), `use_token_compression` and `image_token_index` (the `<image>` token). Its weights
(bf16, sharded with an index) are `model.embed_tokens/layers/norm.*`, `lm_head.*`,
`model.vision_encoder.{embeddings,encoder,post_layernorm}.*` and `model.mm_projector.readout.{0,2}.*`.
Its processor (`Videollama3Qwen2Processor` + `Videollama3ImageProcessor`, also remote code) writes
`Time {t}s:<image>` per frame, joined by "," and closed by a newline, expands each `<image>` to the
frame's merged tokens, and the *model* drops the near-static tokens (`use_token_compression`).

transformers' native class computes the same function with other names and moves the pruning into
the video processor. This module rewrites the folder without running any of its code: renamed
weights (same dtype and sharding), a native config, and native tokenizer, image processor, video
processor and chat template carrying the published settings (see `docs/families.md`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from tl_video.loading.checkpoint import CheckpointError, check_weight_files, error_summary, read_json_object
from tl_video.loading.published import PublishedFormat, rewrite_shards

ARCHITECTURE = "Videollama3Qwen2ForCausalLM"
MODEL_TYPE = "videollama3_qwen2"

# Published weight prefix -> native prefix, first match wins (the training layout nests the tower once more).
KEY_PREFIXES = (
    ("model.vision_encoder.vision_encoder.", "model.vision_model."),
    ("model.vision_encoder.", "model.vision_model."),
    ("model.mm_projector.", "model.projector."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)

# config.json keys of the Qwen2 language model (the rest describe the wrapper, the training run or the file);
# `rope_theta` and `rope_scaling` become `rope_parameters`.
_TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache",
    "use_sliding_window", "sliding_window", "max_window_layers", "layer_types", "attention_dropout", "bos_token_id",
    "eos_token_id", "pad_token_id", "tie_word_embeddings",
)
_VISION_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels", "patch_size",
    "hidden_act", "layer_norm_eps", "attention_dropout",
)

# The published ChatML template (no default system prompt; `stream` turns use <|stream_start|>), with the
# video written as one placeholder the native processor expands to `Time t s:` + kept tokens per frame.
NATIVE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'stream' %}{% set identifier = 'stream' %}{% else %}{% set identifier = 'im' %}{% endif %}"
    "{{ '<|' + identifier + '_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] + '<|' + identifier + '_end|>\\n' }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{% if 'time' in content %}{{ 'Time ' + content['time'] | round(1) | string + 's: ' }}{% endif %}"
    "{{ '<|image_pad|>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<|video_pad|>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{{ '<|' + identifier + '_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def accepts(config: dict[str, Any]) -> bool:
    """A published VideoLLaMA3 folder: its own model_type or architecture name."""
    return config.get("model_type") == MODEL_TYPE or ARCHITECTURE in (config.get("architectures") or [])


def convert(source: Path, destination: Path, options: dict[str, Any]) -> None:
    """Write the native checkpoint of the published folder `source` into the empty folder `destination`."""
    if options:
        raise CheckpointError(
            f"{source}: a VideoLLaMA3 checkpoint takes no conversion options, got {sorted(options)}; "
            "drop them (they belong to PLLaVA-format checkpoints)"
        )
    config = read_json_object(source / "config.json")
    vision = _vision_config(source, config)
    _check_projector(source, config)
    check_weight_files(source)
    tokenizer = _tokenizer(source)
    _write_weights(source, destination, config)
    _write_config(destination, config, vision, tokenizer)
    _write_processor(source, destination, config, tokenizer)
    if (source / "generation_config.json").is_file():
        shutil.copyfile(source / "generation_config.json", destination / "generation_config.json")


def native_key(key: str) -> str | None:
    """The native name of a published tensor, or None for a name the published architecture does not have."""
    for published, native in KEY_PREFIXES:
        if key.startswith(published):
            return native + key[len(published) :]
    return None


def _vision_config(source: Path, config: dict[str, Any]) -> dict[str, Any]:
    vision = config.get("vision_encoder_config")
    if not isinstance(vision, dict) or not vision:
        where = f" and names the encoder {config['vision_encoder']!r} in field vision_encoder" if config.get("vision_encoder") else ""
        raise CheckpointError(
            f"{source}/config.json has no vision_encoder_config{where}: the vision encoder is stored apart; "
            "use the hub checkpoint saved with its encoder inside (vision_encoder: null, vision_encoder_config set)"
        )
    return {key: vision[key] for key in _VISION_KEYS if key in vision}


def _check_projector(source: Path, config: dict[str, Any]) -> None:
    kind = config.get("mm_projector_type", "linear")
    match = re.fullmatch(r"mlp(\d+)x_gelu", str(kind))
    if not match or match.group(1) != "2":
        raise CheckpointError(
            f"{source}/config.json: mm_projector_type {kind!r} is not supported; transformers' VideoLLaMA3 has the "
            "published 'mlp2x_gelu' projector (Linear, GELU, Linear) only"
        )


def _write_weights(source: Path, destination: Path, config: dict[str, Any]) -> None:
    """Every source shard rewritten under the same file name with native keys, dtype unchanged; a new index."""

    def rewrite(shard: Path, key: str, load: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        new = native_key(key)
        if new is None:
            raise CheckpointError(
                f"{shard}: tensor {key!r} is not part of {ARCHITECTURE} (expected model.embed_tokens/"
                "layers/norm.*, model.vision_encoder.*, model.mm_projector.*, lm_head.*); remove it or use "
                "the published files"
            )
        return {new: load()}

    weight_map = rewrite_shards(source, destination, rewrite)
    if not any(key.startswith("model.vision_model.") for key in weight_map):
        raise CheckpointError(
            f"{source} holds no model.vision_encoder.* weights (config.json field vision_encoder: "
            f"{config.get('vision_encoder')!r}); the vision encoder is stored apart: use a checkpoint that includes it"
        )


def _tokenizer(source: Path) -> Any:
    from transformers import AutoTokenizer, Qwen2Config

    try:  # config.json's model_type is not a transformers one: the tokenizer class falls back to Qwen2's
        tokenizer = AutoTokenizer.from_pretrained(source, config=Qwen2Config(), trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{source}: the tokenizer could not be read ({error_summary(error)}); copy tokenizer.json and "
            "tokenizer_config.json of the published checkpoint into the folder"
        ) from error
    for token in ("<|image_pad|>", "<|video_pad|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise CheckpointError(
                f"{source}/tokenizer.json has no {token} token (the Qwen2.5 vision placeholder the native processor "
                "writes); use the published tokenizer files"
            )
    return tokenizer


def _write_config(destination: Path, config: dict[str, Any], vision: dict[str, Any], tokenizer: Any) -> None:
    from transformers import VideoLlama3Config

    text = {key: config[key] for key in _TEXT_KEYS if key in config}
    text["rope_parameters"] = _rope_parameters(config)
    native = VideoLlama3Config(
        text_config={**text, "model_type": "qwen2"},
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )
    native.architectures = ["VideoLlama3ForConditionalGeneration"]
    dtype = config.get("torch_dtype") or config.get("dtype")
    if dtype:
        native.dtype = dtype
    native.save_pretrained(destination)


def native_chat_template(source: Path, tokenizer: Any) -> str:
    """The published chat template with its per-frame video loop replaced by one `<|video_pad|>`.

    The native processor writes `Time t s:` and each frame's kept tokens itself, so the template
    must emit one placeholder per video. The rewrite keeps everything else of the published template
    (roles, system turns, image branch); it is accepted only if it renders a probe conversation exactly
    as the published template does once the placeholder is expanded, else the fixed ChatML template
    (`NATIVE_CHAT_TEMPLATE`) is tried the same way, else the conversion stops.
    """
    published = tokenizer.chat_template
    if not published:
        return NATIVE_CHAT_TEMPLATE
    rewritten = re.sub(
        r"\{%-?\s*for (\w+) in range\(content\[.num_frames.\]\)\s*-?%\}.*?\{%-?\s*endfor\s*-?%\}",
        lambda _: "{{- '<|video_pad|>\\n' -}}",
        published,
        count=1,
        flags=re.DOTALL,
    )
    # the image branch: the published processor passes `image_token` ("<image>") or the template spells it out
    rewritten = re.sub(r"\bimage_token\b", "'<|image_pad|>'", rewritten).replace("'<image>", "'<|image_pad|>")
    for candidate in (rewritten, NATIVE_CHAT_TEMPLATE):
        if _renders_as_published(tokenizer, published, candidate):
            return candidate
    raise CheckpointError(
        f"{source}/tokenizer_config.json: the chat_template renders a video turn in a way the native processor "
        "cannot reproduce (expected one `Time t s:<image>` per frame, ',' between frames); pass the prompt "
        "text with the video placeholder yourself or fix the template"
    )


def _renders_as_published(tokenizer: Any, published: str, candidate: str) -> bool:
    """A system + user(video, text) turn with a generation prompt renders the same text both ways."""
    frames = "Time 0.0s:<image>,Time 1.5s:<image>"
    for system in (None, "Be brief."):
        head = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        published_turn = {"type": "video", "num_frames": 2, "timestamps": [0.0, 1.5]}
        try:
            expected = tokenizer.apply_chat_template(
                [*head, {"role": "user", "content": [published_turn, {"type": "text", "text": "Q?"}]}],
                chat_template=published, tokenize=False, add_generation_prompt=True, image_token="<image>",
            )
            native = tokenizer.apply_chat_template(
                [*head, {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q?"}]}],
                chat_template=candidate, tokenize=False, add_generation_prompt=True,
            )
        except Exception:  # noqa: BLE001 - a template that cannot render the probe is simply not equivalent
            return False
        if native.count("<|video_pad|>") != 1 or native.replace("<|video_pad|>", frames) != expected:
            return False
    return True


def _rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """The 4.x `rope_theta` + `rope_scaling` pair as one 5.x `rope_parameters` dict."""
    scaling = dict(config.get("rope_scaling") or {})
    kind = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    return {**scaling, "rope_type": kind, "rope_theta": float(config.get("rope_theta", 10000.0))}


def _write_processor(source: Path, destination: Path, config: dict[str, Any], tokenizer: Any) -> None:
    """Native image/video processors with the published resize budget, normalisation and merge sizes."""
    from transformers import VideoLlama3ImageProcessor, VideoLlama3Processor, VideoLlama3VideoProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    path = source / "preprocessor_config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{source} has no preprocessor_config.json (the published Videollama3ImageProcessor settings: patch_size, "
            "min_tokens, max_tokens, image_mean, image_std); copy it from the published checkpoint"
        )
    published = read_json_object(path)
    processor_path = source / "processor_config.json"
    extra = read_json_object(processor_path) if processor_path.is_file() else {}
    patch = int(published.get("patch_size", 14))
    min_tokens, max_tokens = int(published.get("min_tokens", 16)), int(published.get("max_tokens", 16384))
    common = {
        "patch_size": patch,
        "do_resize": published.get("do_resize", True),
        "resample": published.get("resample", 3),
        "do_rescale": published.get("do_rescale", True),
        "rescale_factor": published.get("rescale_factor", 1 / 255),
        "do_normalize": published.get("do_normalize", True),
        "image_mean": published.get("image_mean") or list(OPENAI_CLIP_MEAN),
        "image_std": published.get("image_std") or list(OPENAI_CLIP_STD),
        "do_convert_rgb": published.get("do_convert_rgb", True),
    }

    def budget(merge: int) -> dict[str, int]:  # the published processor counts tokens of (patch * merge)^2 pixels
        return {"shortest_edge": min_tokens * (patch * merge) ** 2, "longest_edge": max_tokens * (patch * merge) ** 2}

    image_merge, video_merge = int(extra.get("image_merge_size", 1)), int(extra.get("video_merge_size", 2))
    processor = VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(size=budget(image_merge), merge_size=image_merge, **common),
        tokenizer=tokenizer,
        video_processor=VideoLlama3VideoProcessor(
            size=budget(video_merge),
            merge_size=video_merge,
            use_token_compression=bool(config.get("use_token_compression", True)),
            max_frames=int(extra.get("max_frames", 180)),
            **common,
        ),
        chat_template=native_chat_template(source, tokenizer),
    )
    tokenizer.chat_template = None  # the published template iterates frames the native processor expands itself
    processor.save_pretrained(destination)


PUBLISHED_VIDEOLLAMA3 = PublishedFormat(name="videollama3_qwen2", accepts=accepts, convert=convert, version=1)
