"""Each bad input gets a clear error naming the problem, never a silent wrong answer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import tl_video
from tl_video.loading import CheckpointError
from tests.conftest import random_video


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((4, 40, 48), dtype=np.uint8), r"uint8 \[frames, height, width, 3\]"),
        (np.zeros((4, 40, 48, 4), dtype=np.uint8), r"\[frames, height, width, 3\]"),
        (np.zeros((4, 40, 48, 3), dtype=np.float32), "dtype float32"),
        (np.zeros((0, 40, 48, 3), dtype=np.uint8), "no frames"),
        (np.zeros((4, 1, 48, 3), dtype=np.uint8), "too small"),
    ],
)
def test_malformed_frames(model, frames, message):
    with pytest.raises(ValueError, match=message):
        model.prepare(video=frames, prompt="What happens?")


def test_wrong_frame_count(model):
    with pytest.raises(ValueError, match="expected 8 frames"):
        model.prepare(video=random_video(0, frames=4), prompt="What happens?", num_frames=8)


def test_prompt_with_two_placeholders(model):
    with pytest.raises(ValueError, match="2 times"):
        model.prepare(video=random_video(0), prompt="<video> and <video>")


def test_prompt_longer_than_the_context(tiny_checkpoint):
    model = tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint)
    model.cfg.n_ctx = 20
    with pytest.raises(ValueError, match="context is 20"):
        model.prepare(video=random_video(0), prompt="What happens?")


def test_placeholder_count_mismatch_is_caught(model):
    """A front end producing a different number of tokens than the prompt has room for."""
    frontend = model.frontend
    original = frontend.video_token_id
    frontend.video_token_id = model.tokenizer.convert_tokens_to_ids("<image>")
    try:
        with pytest.raises(ValueError, match="no room for the video"):
            model.prepare(video=random_video(0), prompt="What happens?")
    finally:
        frontend.video_token_id = original


def test_token_ids_out_of_range(model):
    limit = model.cfg.d_vocab + len(model.video_bank)
    with pytest.raises(ValueError, match="out of range"):
        model(torch.tensor([[1, 2, limit]]))
    with pytest.raises(ValueError, match=">= 0"):
        model(torch.tensor([[1, -3]]))
    with pytest.raises(TypeError, match="token ids, not text"):
        model("hello")


def test_layer_out_of_range(model):
    tokens = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="stop_at_layer=7 is out of range"):
        model(tokens, stop_at_layer=7)


def test_missing_weights(checkpoint_copy):
    weights_path = checkpoint_copy / "model.safetensors"
    weights = load_file(weights_path)
    removed = next(k for k in weights if "layers.1.mlp.down_proj" in k)
    del weights[removed]
    save_file(weights, weights_path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing 1 weights"):
        tl_video.HookedVideoTransformer.from_pretrained(checkpoint_copy)


def test_unsupported_architecture_lists_supported(checkpoint_copy):
    edit_config(checkpoint_copy, architectures=["MambaForCausalLM"])
    with pytest.raises(CheckpointError, match="Supported: .*LlavaNextVideoForConditionalGeneration"):
        tl_video.HookedVideoTransformer.from_pretrained(checkpoint_copy)


def test_remote_code_needs_consent(checkpoint_copy):
    edit_config(checkpoint_copy, auto_map={"AutoModel": "modeling_custom.Model"})
    with pytest.raises(CheckpointError, match="trust_remote_code=True"):
        tl_video.HookedVideoTransformer.from_pretrained(checkpoint_copy)


def test_pickle_only_weights_refused(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").rename(checkpoint_copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        tl_video.HookedVideoTransformer.from_pretrained(checkpoint_copy)


def test_unreachable_hub_id_fails_offline_without_touching_the_network(tmp_path, monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE once, at import, so the variable alone would not make this
    process offline: its constant is set too. Every socket is refused and counted, so any network
    attempt fails the test, even on a machine where it would have succeeded."""
    import socket

    import huggingface_hub.constants

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args)[:100])
        raise OSError("network disabled by the test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no cached snapshot to fall back on
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    with pytest.raises(FileNotFoundError, match="could not be fetched"):
        tl_video.HookedVideoTransformer.from_pretrained("no-such-org/no-such-model")
    assert attempts == [], f"the hub was contacted: {attempts}"


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        tl_video.HookedVideoTransformer.from_pretrained(tmp_path / "nothing" / "here")


def test_misspelt_or_switched_off_hook_names(model):
    tokens = torch.tensor([[1, 2, 3]])
    with pytest.raises(KeyError, match="did you mean blocks.0.hook_resid_pre"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pr", lambda x, hook: x)])
    with pytest.raises(ValueError, match="set_use_attn_result"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_result", lambda x, hook: x)])
    with pytest.raises(KeyError, match="no hook point"):
        model.add_hook("blocks.9.hook_nothing_like_it_zzz", lambda x, hook: x)
