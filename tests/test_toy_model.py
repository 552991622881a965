"""The built-in toy VideoLLM `tl-video/toy-temporal`: its training recipe, its accuracy, its parity with HF."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import tl_video
from tests.tolerances import LOGITS_FP32
from tl_video.data.synthetic import generate_benchmark
from tl_video.loading.checkpoint import BUILTIN_MODELS
from tl_video.prompts import prepare_example
from tl_video.testing import save_tiny_llava_next_video
from tl_video.training.evaluate_toy import REVERSIBLE_TASKS, evaluate_toy
from tl_video.training.train_toy import (
    ToyTrainingConfig,
    build_checkpoint,
    encode_examples,
    render_text,
    reversed_copies,
    template_processor,
    train,
)
from tl_video.video import read_video

TOY = "tl-video/toy-temporal"
# A fixed held-out set: training renders seeds 100*s + {0, 1, 2}, the card's held-out set 100*s + 99.
HELDOUT_SEED = 7_654_321
HELDOUT_PER_TASK = 8

@pytest.fixture(scope="module")
def toy() -> tl_video.HookedVideoTransformer:
    return tl_video.HookedVideoTransformer.from_pretrained(TOY, keep_hf_model=True)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    # The benchmark's default rendering (16 frames, 64 px), read back from the mp4 files.
    return generate_benchmark(tmp_path_factory.mktemp("heldout"), n_per_task=HELDOUT_PER_TASK, seed=HELDOUT_SEED)


def test_a_few_training_steps_lower_the_loss(tmp_path):
    examples = generate_benchmark(tmp_path / "data", n_per_task=2, seed=5, num_frames=8, size=32)
    frames = [read_video(example.video, num_frames=8).frames for example in examples]
    config = replace(
        ToyTrainingConfig(), steps=30, batch_size=10, lr=3e-3, warmup_steps=1, eval_every=1000,
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, vision_hidden_size=32, vision_intermediate_size=64,
        answer_probe_layer=1,
    )
    template = template_processor(tmp_path / "template")
    hf_model, processor = build_checkpoint(config, tmp_path / "init", [render_text(template, e) for e in examples])
    data = encode_examples(processor, examples, frames)
    data += reversed_copies(data)

    records = train(hf_model, data, config, pad_id=processor.tokenizer.pad_token_id, progress=False)

    assert [r["step"] for r in records] == list(range(1, config.steps + 1))
    assert {"loss", "lr", "elapsed"} <= records[0].keys()
    first = np.mean([r["loss"] for r in records[:3]])
    last = np.mean([r["loss"] for r in records[-3:]])
    assert last < 0.5 * first, f"answer loss went from {first:.3f} to {last:.3f} in {config.steps} steps"


def test_training_text_is_what_prepare_example_renders(tmp_path):
    folder = save_tiny_llava_next_video(tmp_path / "tiny")
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    example = generate_benchmark(tmp_path / "data", n_per_task=1, seed=1, num_frames=8, size=32, tasks=["antonym"])[0]
    assert render_text(model.processor, example) == prepare_example(model, example, num_frames=8).text


def test_shipped_checkpoint_answers_from_time(toy, heldout):
    evaluation = evaluate_toy(toy, heldout, num_frames=8)
    report = "\n" + evaluation.markdown_table()
    for task in evaluation.tasks:
        assert evaluation.accuracy(task, "clean") >= 0.9, report
        # One frame does not tell the answer: the frozen video (all frames = the middle one) costs
        # most of the accuracy. What is left is the options' prior (the model card explains it).
        assert evaluation.accuracy(task, "frozen") <= evaluation.accuracy(task, "clean") - 0.25, report
    assert np.mean([evaluation.accuracy(task, "frozen") for task in evaluation.tasks]) <= 0.5, report
    # Played backwards, the answer follows the video: direction, order, transition, antonym flip.
    for task in REVERSIBLE_TASKS:
        assert evaluation.accuracy(task, "reversed") >= 0.75, report


def test_shipped_checkpoint_is_a_small_llava_next_video(toy):
    folder = BUILTIN_MODELS[TOY]
    assert toy.hf_model[0].__class__.__name__ == "LlavaNextVideoForConditionalGeneration"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md", "training_log.jsonl"):
        assert (folder / name).is_file(), name
    checkpoint_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert checkpoint_bytes <= 20 * 2**20


def test_shipped_checkpoint_matches_hf(toy, heldout):
    hf = toy.hf_model[0]
    hf.set_attn_implementation("eager")
    for example in heldout[:: HELDOUT_PER_TASK]:  # one per task
        prepared = prepare_example(toy, example, num_frames=8)
        processed = toy.processor(text=prepared.text, videos=[prepared.frames], return_tensors="pt")
        with torch.no_grad():
            ours = toy(prepared.tokens)
            reference = hf(**processed).logits
        diff = (ours - reference).abs().max().item()
        assert diff <= LOGITS_FP32, f"{example.example_id}: logits differ by {diff:.2e}"
