"""A tiny random checkpoint written the way InternVL-Chat checkpoints are published (Mini-InternVL-4B).

Mirrors `OpenGVLab/Mini-InternVL-Chat-4B-V1-5` and its fine-tune `byminji/Mini-InternVL-4B-Video-FT`
on disk: config.json of `InternVLChatModel` (model_type `internvl_chat`, `auto_map` to remote code,
nested `vision_config` of InternViT and `llm_config` of Phi-3-mini-128k with a LongRoPE
`rope_scaling` of type `su` and `original_max_position_embeddings` beside it, `template`
`phi3-chat`, `ps_version` v2, the study's `img_context_token_id`/`num_frames`), the published key
names (`vision_model.*` with fused `attn.qkv` and `ls1`/`ls2`, `mlp1.{0,1,3}.*`,
`language_model.model.*` with fused `qkv_proj`/`gate_up_proj`, `language_model.lm_head.*`) in
bfloat16, sharded with `model.safetensors.index.json`, the remote-code files (stubs that raise if
anything ever imports them) and a Phi-3-style tokenizer without a processor config.
The tokenizer is the byte-level test tokenizer with Phi-3's and InternVL's special tokens (the
published one is a SentencePiece Llama tokenizer with the same special tokens).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import InternVLConfig, InternVLForConditionalGeneration

from tl_video.testing.random_init import widen_random_weights
from tl_video.testing.tokenizer import build_byte_tokenizer

PHI3_SPECIALS = {"bos_token": "<s>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"}
PHI3_ADDED = ["<|assistant|>", "<|end|>", "<|system|>", "<|user|>"]
INTERNVL_ADDED = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
REMOTE_CODE = ("configuration_internvl_chat.py", "modeling_internvl_chat.py", "configuration_intern_vit.py",
               "modeling_intern_vit.py", "configuration_phi3.py", "modeling_phi3.py", "conversation.py")
AUTO_MAP = {
    "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
    "AutoModel": "modeling_internvl_chat.InternVLChatModel",
    "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
}
# transformers' InternVLVision names -> InternViT's (the published names), per dotted component.
_INTERNVIT_NAMES = {
    "layer": "layers", "cls_token": "class_embedding", "position_embeddings": "position_embedding",
    "lambda_1": "ls1", "lambda_2": "ls2", "attention": "attn", "projection_layer": "proj",
    "layernorm_before": "norm1", "layernorm_after": "norm2",
}


def save_published_internvl_chat(
    folder: str | Path,
    *,
    seed: int = 0,
    num_hidden_layers: int = 2,
    hidden_size: int = 64,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 4,
    intermediate_size: int = 128,
    original_max_position_embeddings: int = 1024,
    max_position_embeddings: int = 8192,
    rope_scaling_type: str = "su",
    image_size: int = 64,
    patch_size: int = 8,
    num_shards: int = 2,
    system_message: str | None = None,
    with_preprocessor_config: bool = False,
) -> Path:
    """Write a published-layout InternVL-Chat checkpoint with a Phi-3 LM (LongRoPE) into `folder`.

    With the defaults each frame is 64x64 pixels, an 8x8 patch grid pixel-shuffled to 16 tokens.
    LongRoPE switches to its long factors once a forward pass reaches position
    `original_max_position_embeddings`; set it small (e.g. 64) to exercise them on a short video.
    `system_message` is written to config.json (newer InternVL configs carry one); None leaves it out.
    `with_preprocessor_config` adds the CLIP-style preprocessor_config.json of the InternVL 1.5
    folders (shortest edge to the image size, centre crop, ImageNet mean/std, bicubic).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_byte_tokenizer(PHI3_SPECIALS, PHI3_ADDED + INTERNVL_ADDED)
    half = hidden_size // num_attention_heads // 2
    generator = torch.Generator().manual_seed(seed + 1)
    short = (1.0 + torch.rand(half, generator=generator)).tolist()
    long = (2.0 + 8.0 * torch.rand(half, generator=generator)).sort().values.tolist()
    llm_config = {
        "_name_or_path": "microsoft/Phi-3-mini-128k-instruct",
        "architectures": ["Phi3ForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config", "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
        "attention_dropout": 0.0,
        "attn_implementation": "flash_attention_2",
        "bos_token_id": tokenizer.bos_token_id,
        "embd_pdrop": 0.0,
        "eos_token_id": tokenizer.eos_token_id,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "model_type": "phi3",
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "original_max_position_embeddings": original_max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": long, "short_factor": short, "type": rope_scaling_type},
        "rope_theta": 10000.0,
        "sliding_window": 2 * max_position_embeddings,  # Phi-3-mini-128k: 262144 against a 131072 context
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        "use_cache": True,
        "vocab_size": len(tokenizer),
    }
    vision_config = {
        "architectures": ["InternVisionModel"],
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": 32,
        "image_size": image_size,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-06,
        "model_type": "intern_vit_6b",
        "norm_type": "layer_norm",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": patch_size,
        "qk_normalization": False,
        "qkv_bias": True,
        "torch_dtype": "bfloat16",
        "use_flash_attn": True,
    }
    config = {
        "architectures": ["InternVLChatModel"],
        "auto_map": AUTO_MAP,
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_eager": False,
        "force_image_size": image_size,
        "ignore_index": -100,
        "img_context_token_id": tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        "llm_config": llm_config,
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "model_type": "internvl_chat",
        "num_frames": 4,
        "pad2square": False,
        "pad_token_id": 0,
        "ps_version": "v2",
        "select_layer": -1,
        "template": "phi3-chat",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": vision_config,
    }
    if system_message is not None:
        config["system_message"] = system_message
    state = _published_state(_random_weights(llm_config, vision_config, image_size, patch_size, seed))
    _save_sharded(folder, state, num_shards)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(folder)
    if with_preprocessor_config:
        preprocessor = {
            "crop_size": image_size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": image_size,
        }
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    for name in REMOTE_CODE:
        (folder / name).write_text(f'raise RuntimeError("{name}: remote code of the published checkpoint must never run")\n')
    return folder


def _random_weights(llm: dict, vision: dict, image_size: int, patch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Random O(1) weights in transformers' InternVL layout (the shapes every published tensor has)."""
    text = {key: value for key, value in llm.items() if key not in ("architectures", "auto_map", "rope_scaling", "_name_or_path", "attn_implementation", "torch_dtype", "transformers_version")}
    text["rope_parameters"] = {
        "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": llm["rope_scaling"]["short_factor"],
        "long_factor": llm["rope_scaling"]["long_factor"],
        "original_max_position_embeddings": llm["original_max_position_embeddings"],
    }
    config = InternVLConfig(
        text_config=text,
        vision_config={
            "hidden_size": vision["hidden_size"], "intermediate_size": vision["intermediate_size"],
            "num_hidden_layers": vision["num_hidden_layers"], "num_attention_heads": vision["num_attention_heads"],
            "image_size": [image_size, image_size], "patch_size": [patch_size, patch_size], "attention_bias": True,
            "norm_type": "layer_norm", "use_mean_pooling": True, "layer_scale_init_value": 0.1,
        },
        image_token_id=0,
        downsample_ratio=0.5,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config).eval()
        widen_random_weights(model)
        for name, parameter in model.named_parameters():  # layer scales and embeddings: O(1) too
            if name.endswith(("lambda_1", "lambda_2")):
                parameter.data.uniform_(0.5, 1.0)
            elif name.endswith(("cls_token", "position_embeddings")):
                parameter.data.normal_(0.0, 1.0)
    return dict(model.state_dict())


def _published_state(native: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' InternVL names -> the published InternVLChatModel names (q/k/v fused back into qkv)."""
    published: dict[str, torch.Tensor] = {}
    for key, tensor in native.items():
        if key.startswith("model.vision_tower."):
            rest = key.removeprefix("model.vision_tower.").replace("patch_embeddings.projection", "patch_embedding")
            rest = ".".join(_INTERNVIT_NAMES.get(part, part) for part in rest.split("."))
            if ".attn.k_proj." in rest or ".attn.v_proj." in rest:
                continue
            if ".attn.q_proj." in rest:
                parts = [native[key.replace(".q_proj.", f".{name}_proj.")] for name in "qkv"]
                rest, tensor = rest.replace(".q_proj.", ".qkv."), torch.cat(parts, dim=0)
            published["vision_model." + rest] = tensor
        elif key.startswith("model.multi_modal_projector."):
            rest = key.removeprefix("model.multi_modal_projector.")
            for native_name, index in (("layer_norm.", "0."), ("linear_1.", "1."), ("linear_2.", "3.")):
                rest = rest.replace(native_name, index) if rest.startswith(native_name) else rest
            published["mlp1." + rest] = tensor
        elif key.startswith("model.language_model."):
            published["language_model.model." + key.removeprefix("model.language_model.")] = tensor
        elif key == "lm_head.weight":
            published["language_model.lm_head.weight"] = tensor
        else:
            raise ValueError(f"no published name for {key!r}")
    return {key: value.to(torch.bfloat16).contiguous() for key, value in published.items()}


def _save_sharded(folder: Path, state: dict[str, torch.Tensor], num_shards: int) -> None:
    """`model-0000i-of-0000n.safetensors` files plus the index, as `save_pretrained` shards them."""
    keys = sorted(state)
    per_shard = -(-len(keys) // num_shards)
    weight_map = {}
    for index in range(num_shards):
        name = f"model-{index + 1:05d}-of-{num_shards:05d}.safetensors"
        chunk = {key: state[key] for key in keys[index * per_shard : (index + 1) * per_shard]}
        save_file(chunk, folder / name, metadata={"format": "pt"})
        weight_map.update({key: name for key in chunk})
    total = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2) + "\n")
