"""Shared set-up of the parity tests: our model and HF's reference loaded on their own, and inputs built both ways."""

from __future__ import annotations

import torch

import tl_video
from tests.oracles import assert_same_prompt, hf_chat_inputs, reference_model, reference_processor

PROMPT = "What happens in the video?"


def load_pair(folder, dtype: torch.dtype = torch.float32, **kwargs):
    """(ours, HF reference model, HF reference processor), each loaded on its own from the folder."""
    model = tl_video.HookedVideoTransformer.from_pretrained(folder, dtype=dtype, **kwargs)
    return model, reference_model(folder, dtype), reference_processor(folder)


def prepare_with_reference(model, processor, frames, **processor_kwargs):
    """(our prepared input, HF's inputs from the raw frames and prompt); the text tokens must agree."""
    processed = hf_chat_inputs(processor, frames, PROMPT, **processor_kwargs)
    prepared = model.prepare(video=frames, prompt=PROMPT)
    assert_same_prompt(prepared.tokens, processed["input_ids"], model.frontend.video_token_id)
    return prepared, processed
