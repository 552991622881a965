"""Tiny random checkpoints saved to disk once per session and loaded through the public path."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

import tl_video
from tl_video.testing import save_tiny_llava_next_video

# Converted published checkpoints go to a per-run folder, never the user's ~/.cache.
os.environ["TL_VIDEO_CACHE"] = tempfile.mkdtemp(prefix="tl_video_cache_")
# Every model here is tiny: one torch thread is faster than two, and on a busy 2-core machine a second
# thread makes a test 10x slower (tests/test_transformer_lens_tools.py alone: 90 s with two, 8 s with one).
# Set once for the session, so that the speed does not depend on which test first loads the built-in model.
torch.set_num_threads(1)

# name -> builder options; each a real saved LLaVA-NeXT-Video checkpoint.
LLAVA_NEXT_VIDEO_VARIANTS = {
    "plain": {},
    "gqa_bias": {"num_key_value_heads": 2, "attention_bias": True},
    "rope_linear": {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}},
    "rope_llama3": {
        "num_key_value_heads": 1,
        "rope_parameters": {
            "rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
        },
    },
}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: save_tiny_llava_next_video(root / name, **options) for name, options in LLAVA_NEXT_VIDEO_VARIANTS.items()}


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoints):
    return tiny_checkpoints["plain"]


@pytest.fixture(scope="session")
def model(tiny_checkpoint) -> tl_video.HookedVideoTransformer:
    return tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint)


def random_video(seed: int, frames: int = 4, height: int = 40, width: int = 48) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (frames, height, width, 3), dtype=np.uint8)


@pytest.fixture
def video() -> np.ndarray:
    return random_video(0)


@pytest.fixture(autouse=True)
def _deterministic():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield
