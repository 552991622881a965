"""A tiny VideoLLaMA3 checkpoint written the way `DAMO-NLP-SG/VideoLLaMA3-7B` is on disk (remote-code format).

Everything transformers does not own is written by hand from the published release
(`Videollama3Qwen2ForCausalLM`, `Videollama3Qwen2Config`, `Videollama3ImageProcessor`,
`Videollama3Qwen2Processor` of github.com/DAMO-NLP-SG/VideoLLaMA3): config.json with the Qwen2 fields
at the top level, `auto_map`, `vision_encoder: null` and `vision_encoder_config`, `mm_projector_type
"mlp2x_gelu"`, `use_token_compression`, `image_token_index` (`<image>`); bf16 weights named
`model.layers.*`, `model.vision_encoder.*`, `model.mm_projector.readout.{0,2}.*`, `lm_head.*`, split
into shards with `model.safetensors.index.json`; `preprocessor_config.json` / `processor_config.json`
naming the remote classes; the chat template (per frame `Time t s:<image>`, "," between frames) in
tokenizer_config.json; and the remote-code file names, each of which raises if anything executes it.

Differences from the real files: a byte-level tokenizer (class `TokenizersBackend`, not
`Qwen2Tokenizer`) with the Qwen2.5 special tokens and `<image>`, tiny shapes, and random weights drawn
so activations are O(1) (weights N(0, 1/fan_in), biases N(0, 0.2), norm gains U(0.5, 1.5)).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tl_video.testing.tokenizer import build_byte_tokenizer

# VideoLLaMA3's published ChatML template (as its remote processor renders it: `image_token` is passed in
# by `Videollama3Qwen2Processor.apply_chat_template`, "<image>" by default).
PUBLISHED_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'stream' %}{% set identifier = 'stream' %}{% else %}{% set identifier = 'im' %}{% endif %}"
    "{{- '<|' + identifier + '_start|>' + message['role'] + '\\n' -}}"
    "{% if message['content'] is string %}{{- message['content'] + '<|' + identifier + '_end|>\\n' -}}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% if 'time' in content %}{{- 'Time ' + content['time'] | round(1) | string + 's: ' -}}{% endif %}"
    "{{- image_token + '\\n' -}}"
    "{% elif content['type'] == 'video' or 'video' in content or 'video_url' in content %}"
    "{% for i in range(content['num_frames']) %}"
    "{% if 'timestamps' in content and content['timestamps']|length > 0 %}"
    "{{- 'Time ' + content['timestamps'][i] | round(1) | string + 's:' -}}{% endif %}"
    "{% if i < content['num_frames'] - 1 %}{{- image_token + ',' -}}{% else %}{{- image_token + '\\n' -}}{% endif %}"
    "{% endfor %}"
    "{% elif content['type'] == 'text' or 'text' in content %}{{- content['text'] -}}{% endif %}"
    "{% endfor %}{{- '<|' + identifier + '_end|>\\n' -}}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{- '<|im_start|>assistant\\n' -}}{% endif %}"
)



def published_chat_template(default_system: str | None = None) -> str:
    """The published template; with `default_system`, a system turn is written when the conversation has none."""
    if default_system is None:
        return PUBLISHED_CHAT_TEMPLATE
    head = (
        "{% if messages[0]['role'] != 'system' %}"
        f"{{{{- '<|im_start|>system\\n{default_system}<|im_end|>\\n' -}}}}"
        "{% endif %}"
    )
    return head + PUBLISHED_CHAT_TEMPLATE


SPECIAL_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
EXTRA_TOKENS = [
    "<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
    "<|stream_start|>", "<|stream_end|>", "<image>",
]
REMOTE_CODE_FILES = (
    "configuration_videollama3.py", "configuration_videollama3_encoder.py", "modeling_videollama3.py",
    "modeling_videollama3_encoder.py", "image_processing_videollama3.py", "processing_videollama3.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration_videollama3.Videollama3Qwen2Config",
    "AutoModelForCausalLM": "modeling_videollama3.Videollama3Qwen2ForCausalLM",
}
PROCESSOR_AUTO_MAP = {
    "AutoImageProcessor": "image_processing_videollama3.Videollama3ImageProcessor",
    "AutoProcessor": "processing_videollama3.Videollama3Qwen2Processor",
}


def save_published_videollama3(
    folder: str | Path,
    *,
    seed: int = 0,
    num_hidden_layers: int = 2,
    hidden_size: int = 64,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    vision_heads: int = 2,
    patch_size: int = 6,
    min_tokens: int = 1,
    max_tokens: int = 256,
    use_token_compression: bool = True,
    tie_word_embeddings: bool = False,
    shards: int = 2,
    dtype: torch.dtype = torch.bfloat16,
    vision_encoder: str | None = None,
    with_vision_weights: bool = True,
    mm_projector_type: str = "mlp2x_gelu",
    default_system: str | None = None,
) -> Path:
    """Write the tiny published-format checkpoint; returns the folder.

    Frames are resized to multiples of patch_size * 2 = 12 pixels (video merge size 2) within
    [min_tokens, max_tokens / T] tokens of 12 x 12 pixels each: a 36 x 48 frame is kept as is, 3 x 4
    merged tokens. `vision_encoder`/`with_vision_weights=False` write the variant whose tower is stored
    apart (the training layout's config), which the converter refuses. `default_system` makes the chat
    template write that system turn when a conversation has none (as Qwen2.5's own template does).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    template = published_chat_template(default_system)
    tokenizer = build_byte_tokenizer(SPECIAL_TOKENS, EXTRA_TOKENS, chat_template=template)
    vocab = len(tokenizer)
    vision = {
        "model_type": "videollama3_vision_encoder",
        "hidden_size": vision_hidden_size,
        "intermediate_size": 2 * vision_hidden_size,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": vision_heads,
        "num_channels": 3,
        "patch_size": patch_size,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-06,
        "attention_dropout": 0.0,
    }
    config = {
        "architectures": ["Videollama3Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": AUTO_MAP,
        "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": 32768,
        "max_window_layers": num_hidden_layers,
        "mm_projector_type": mm_projector_type,
        "model_type": "videollama3_qwen2",
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.46.3",
        "use_cache": True,
        "use_sliding_window": False,
        "use_token_compression": use_token_compression,
        "vision_encoder": vision_encoder,
        "vision_encoder_config": {} if vision_encoder else vision,
        "vocab_size": vocab,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "do_sample": False}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")

    tensors = _published_tensors(config, vision, seed, dtype)
    if not with_vision_weights:
        tensors = {key: value for key, value in tensors.items() if not key.startswith("model.vision_encoder.")}
    _save_shards(folder, tensors, shards)
    _save_processor_files(folder, tokenizer, template, patch_size, min_tokens, max_tokens)
    for name in REMOTE_CODE_FILES:  # present as on the hub; never to be executed
        (folder / name).write_text(f'raise RuntimeError("{name}: remote code of the published checkpoint was executed")\n')
    return folder


def _published_tensors(config: dict, vision: dict, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of the published architecture by its published name, random but O(1) in effect."""
    d, layers, heads = config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]
    head_dim, kv = d // heads, config["num_key_value_heads"]
    dv, iv, p = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config["vocab_size"], d), "model.norm.weight": (d,)}
    for i in range(layers):
        prefix = f"model.layers.{i}."
        shapes |= {
            prefix + "self_attn.q_proj.weight": (heads * head_dim, d), prefix + "self_attn.q_proj.bias": (heads * head_dim,),
            prefix + "self_attn.k_proj.weight": (kv * head_dim, d), prefix + "self_attn.k_proj.bias": (kv * head_dim,),
            prefix + "self_attn.v_proj.weight": (kv * head_dim, d), prefix + "self_attn.v_proj.bias": (kv * head_dim,),
            prefix + "self_attn.o_proj.weight": (d, heads * head_dim),
            prefix + "mlp.gate_proj.weight": (config["intermediate_size"], d),
            prefix + "mlp.up_proj.weight": (config["intermediate_size"], d),
            prefix + "mlp.down_proj.weight": (d, config["intermediate_size"]),
            prefix + "input_layernorm.weight": (d,), prefix + "post_attention_layernorm.weight": (d,),
        }
    tower = "model.vision_encoder."
    shapes |= {
        tower + "embeddings.patch_embedding.weight": (dv, vision["num_channels"], p, p),
        tower + "embeddings.patch_embedding.bias": (dv,),
        tower + "post_layernorm.weight": (dv,), tower + "post_layernorm.bias": (dv,),
    }
    for i in range(vision["num_hidden_layers"]):
        prefix = f"{tower}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= {f"{prefix}self_attn.{name}.weight": (dv, dv), f"{prefix}self_attn.{name}.bias": (dv,)}
        for norm in ("layer_norm1", "layer_norm2"):
            shapes |= {f"{prefix}{norm}.weight": (dv,), f"{prefix}{norm}.bias": (dv,)}
        shapes |= {
            prefix + "mlp.fc1.weight": (iv, dv), prefix + "mlp.fc1.bias": (iv,),
            prefix + "mlp.fc2.weight": (dv, iv), prefix + "mlp.fc2.bias": (dv,),
        }
    shapes |= {
        "model.mm_projector.readout.0.weight": (d, dv), "model.mm_projector.readout.0.bias": (d,),
        "model.mm_projector.readout.2.weight": (d, d), "model.mm_projector.readout.2.bias": (d,),
    }
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (config["vocab_size"], d)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in sorted(shapes.items()):
        if "norm" in name and name.endswith(".weight"):
            value = torch.rand(shape, generator=generator) + 0.5
        elif name.endswith(".bias"):
            value = torch.randn(shape, generator=generator) * 0.2
        elif name == "model.embed_tokens.weight":
            scale = d**-0.5 if config["tie_word_embeddings"] else 1.0  # tied: also the unembedding
            value = torch.randn(shape, generator=generator) * scale
        else:
            fan_in = torch.Size(shape[1:]).numel()
            value = torch.randn(shape, generator=generator) * fan_in**-0.5
        tensors[name] = value.to(dtype)
    return tensors


def _save_shards(folder: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    """`model-0000i-of-0000n.safetensors` in name order plus the index, as `save_pretrained` shards them."""
    names = sorted(tensors)
    per_shard = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {name: tensors[name].contiguous() for name in names[i * per_shard : (i + 1) * per_shard]}
        save_file(chunk, folder / shard, metadata={"format": "pt"})
        weight_map.update({name: shard for name in chunk})
    total = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _save_processor_files(folder: Path, tokenizer, template: str, patch_size: int, min_tokens: int, max_tokens: int) -> None:
    tokenizer.save_pretrained(folder)
    template_file = folder / "chat_template.jinja"
    template_file.unlink(missing_ok=True)  # 4.46-era checkpoints keep the template in tokenizer_config.json
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config |= {"chat_template": template, "processor_class": "Videollama3Qwen2Processor"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    image_processor = {
        "auto_map": PROCESSOR_AUTO_MAP,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "Videollama3ImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "max_tokens": max_tokens,
        "min_tokens": min_tokens,
        "patch_size": patch_size,
        "processor_class": "Videollama3Qwen2Processor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(image_processor, indent=2) + "\n")
    processor = {
        "auto_map": {"AutoProcessor": PROCESSOR_AUTO_MAP["AutoProcessor"]},
        "fps": 1,
        "image_merge_size": 1,
        "max_frames": 180,
        "processor_class": "Videollama3Qwen2Processor",
        "video_merge_size": 2,
    }
    (folder / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
