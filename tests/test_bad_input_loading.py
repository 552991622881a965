"""Broken checkpoint folders fail with one `CheckpointError` line naming the file and the fix."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tl_video
from tl_video.loading import CheckpointError


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def load(folder):
    return tl_video.HookedVideoTransformer.from_pretrained(folder)


def edit_weights(folder, edit):
    path = folder / "model.safetensors"
    weights = load_file(path)
    edit(weights)
    save_file(weights, path, metadata={"format": "pt"})


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_unused_tensors_are_an_error_listing_them(checkpoint_copy):
    edit_weights(checkpoint_copy, lambda w: w.update({"model.extra_probe.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"holds 1 tensors that LlavaNextVideoForConditionalGeneration does not use, e.g. \['model.extra_probe.weight'\]") as error:
        load(checkpoint_copy)
    one_line(error)


def test_wrong_shaped_weight_names_key_and_shapes(checkpoint_copy):
    key = "language_model.model.layers.0.mlp.down_proj.weight"
    edit_weights(checkpoint_copy, lambda w: w.update({key: torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError, match=r"1 weights of the wrong shape: .*down_proj.weight: \(3, 3\) in the file, \(64, 128\)") as error:
        load(checkpoint_copy)
    one_line(error)


def test_vocab_mismatched_embedding_says_vocabulary(checkpoint_copy):
    key = "language_model.model.embed_tokens.weight"
    edit_weights(checkpoint_copy, lambda w: w.update({key: w[key][:-5].clone()}))
    with pytest.raises(CheckpointError, match=r"vocabulary size differs from config.json's vocab_size.*\(257, 64\) in the file"):
        load(checkpoint_copy)


@pytest.mark.parametrize("keep", [0, 5, 0.5])
def test_truncated_safetensors_names_the_file(checkpoint_copy, keep):
    path = checkpoint_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError, match=rf"{path}.*not a readable safetensors file.*download it again") as error:
        load(checkpoint_copy)
    one_line(error)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", r"config.json must hold a JSON object \{...\}, got a JSON list"),
        ('"LlavaNextVideoForConditionalGeneration"', "must hold a JSON object.*got a JSON str"),
        ("{\n  \"a\": 1,\n  oops\n}", r"config.json is not valid JSON: .* at line 3, column 3"),
        ("[" * 100_000 + "]" * 100_000, "config.json nests JSON arrays/objects too deeply"),
    ],
)
def test_config_json_not_an_object(checkpoint_copy, text, message):
    (checkpoint_copy / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=message) as error:
        load(checkpoint_copy)
    one_line(error)


def test_config_json_not_utf8_names_line(checkpoint_copy):
    (checkpoint_copy / "config.json").write_bytes(b'{\n"a": "\xff\xfe"\n}')
    with pytest.raises(CheckpointError, match=r"config.json is not UTF-8 text \(byte 8, line 2\)"):
        load(checkpoint_copy)


def test_architectures_given_as_a_string(checkpoint_copy):
    path = checkpoint_copy / "config.json"
    config = json.loads(path.read_text())
    config["architectures"] = config["architectures"][0]
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'architectures' must be a list of class names, e.g. \[\"LlavaNext"):
        load(checkpoint_copy)


def test_config_value_of_the_wrong_type(checkpoint_copy):
    path = checkpoint_copy / "config.json"
    config = json.loads(path.read_text())
    config["text_config"]["num_hidden_layers"] = "two"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="num_hidden_layers.*expected int, got str") as error:
        load(checkpoint_copy)
    one_line(error)


@pytest.mark.parametrize(
    "remove, message",
    [
        (("tokenizer.json", "tokenizer_config.json"), "no tokenizer file"),
        (("processor_config.json",), "no processor config"),
    ],
)
def test_missing_tokenizer_or_processor_files(checkpoint_copy, remove, message):
    for name in remove:
        (checkpoint_copy / name).unlink()
    with pytest.raises(CheckpointError, match=rf"tokenizer/processor could not be loaded: {message}.*copy the tokenizer") as error:
        load(checkpoint_copy)
    one_line(error)


def test_garbage_tokenizer_file(checkpoint_copy):
    (checkpoint_copy / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable files among .*tokenizer.json"):
        load(checkpoint_copy)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[1]", r"adapter_config.json must hold a JSON object"),
        (b'{"r": 8,\n "x": "\xff"}', r"adapter_config.json is not UTF-8 text \(byte 16, line 2\)"),
        (b"[" * 100_000, "nests JSON arrays/objects too deeply"),
    ],
)
def test_lora_adapter_config_unreadable(tmp_path, content, message):
    from tl_video.loading.lora import read_lora_config

    (tmp_path / "adapter_config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_lora_config(tmp_path)


def test_lora_adapter_weights_truncated(tmp_path):
    from tl_video.loading.lora import read_lora_weights

    path = tmp_path / "adapter_model.safetensors"
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 4)}, path)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CheckpointError, match=rf"{path} is not a readable safetensors file"):
        read_lora_weights(tmp_path)


def test_sharded_checkpoint_with_a_missing_shard(checkpoint_copy):
    weights = load_file(checkpoint_copy / "model.safetensors")
    keys = sorted(weights)
    first = {key: weights[key] for key in keys[: len(keys) // 2]}
    save_file(first, checkpoint_copy / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    (checkpoint_copy / "model.safetensors").unlink()
    shard = {key: "model-00001-of-00002.safetensors" if key in first else "model-00002-of-00002.safetensors" for key in keys}
    (checkpoint_copy / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shard}))
    with pytest.raises(CheckpointError, match=r"index.json lists weight files that are not in .*\['model-00002-of-00002.safetensors'\]; the download is incomplete"):
        load(checkpoint_copy)
