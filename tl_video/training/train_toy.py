"""Train the built-in toy VideoLLM ``tl-video/toy-temporal`` on the synthetic temporal VideoQA benchmark.

Why: circuit analyses need a model whose answers provably depend on cross-frame information, that
runs on a laptop, and that ships with the package. This script makes one, reproducibly::

    python -m tl_video.training.train_toy --out tl_video/builtin/toy_temporal --seed 0

What it does, in order:

1. renders the synthetic benchmark (:mod:`tl_video.data.synthetic`) for training as real mp4
   files, in several frame counts and sizes, and decodes each video once with decord
   (:func:`tl_video.video.read_video`, ``num_frames`` frames at segment midpoints);
2. trains a byte-level BPE tokenizer on the rendered prompts (all 256 bytes stay in the
   vocabulary, so any text still tokenizes);
3. builds a small LLaVA-NeXT-Video checkpoint with transformers
   (:func:`tl_video.testing.save_tiny_llava_next_video`: CLIP tower, 2x2 average pool, projector,
   Llama language model) and trains all of it with AdamW on exactly the text
   :func:`tl_video.prompts.prepare_example` renders (the paper's multiple-choice prompt, the chat
   template and "Best option:("), with the cross-entropy loss on the answer letter token;
   reversed copies of the training videos, labelled with the reversed answer, are added.
   Four auxiliary probes (:class:`AuxiliaryProbes`, discarded after training; the checkpoint
   holds only LLaVA-NeXT-Video weights) make this learnable in minutes on a CPU: without them
   the answer loss sits at chance (ln 4) for hundreds of steps, because the video tokens barely
   vary at initialisation and the letter is a pointer to an option that must first be matched
   against the video. They ask for pixel statistics in each video token, their frame-to-frame
   change after layer 1, the answer's text at the question's last token, and "is this option
   correct" at each option's last token;
4. saves the checkpoint (config, safetensors, tokenizer, processor), ``training_log.jsonl``
   (step, loss, lr, elapsed seconds) and a model card ``README.md`` whose accuracies are measured
   by :func:`tl_video.training.evaluate_toy.evaluate_toy` with our ``HookedVideoTransformer`` on a
   held-out benchmark rendered with another seed, read back from its mp4 files.

Everything random derives from ``--seed``. The same seed repeats the recipe exactly, but the
weights agree only up to floating-point summation order (BLAS threads, memory alignment), a
difference that grows over training: a re-run gives similar accuracies, not the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tl_video.data.examples import OPTION_LETTERS, VideoQAExample
from tl_video.prompts.answers import answer_token_id
from tl_video.prompts.prompt_text import MC_ANSWER_PREFIX, multiple_choice_prompt
from tl_video.prompts.render import render_prompt

__all__ = ["ToyTrainingConfig", "EncodedExample", "build_tokenizer", "encode_examples", "render_text", "train", "main"]

VIDEO_PLACEHOLDER = "<video>"


@dataclass(frozen=True, kw_only=True)
class ToyTrainingConfig:
    """Every choice of a training run; written into the model card."""

    seed: int = 0
    # --- data
    num_frames: int = 8  # frames the model sees per video (the library default, DEFAULT_NUM_FRAMES)
    train_per_task: int = 400  # training videos per task and per video variant
    train_variants: tuple[tuple[int, int], ...] = ((16, 64), (8, 64), (8, 32))  # (frames in the file, pixels)
    reverse_augment: bool = True  # add every training video reversed, with its reversed answer
    heldout_per_task: int = 100  # held-out videos per task for the model card
    validation_per_task: int = 20  # videos per task for the quick accuracy in the training log
    heldout_variant: tuple[int, int] = (16, 64)  # the benchmark's defaults
    # --- model (LLaVA-NeXT-Video family)
    image_size: int = 32  # frames are resized and cropped to image_size^2
    patch_size: int = 16  # (32/16)^2 = 4 patches per frame, pooled 2x2 -> 1 video token per frame
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_num_hidden_layers: int = 2
    vision_num_attention_heads: int = 4
    vision_feature_layer: int = -1
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    vocab_size: int = 512  # BPE vocabulary before special tokens (>= 256 bytes; the prompts saturate it earlier)
    # --- optimisation
    steps: int = 3500
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.05  # cosine decay to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # --- losses; every probe is a temporary module, discarded after training (module docstring)
    answer_weight: float = 1.0  # the main loss: cross-entropy of the answer letter after "Best option:("
    frame_probe_weight: float = 1.0  # linear probe: pixel statistics of each frame from its video token
    temporal_probe_weight: float = 1.0  # linear probe: change of those statistics since the previous frame ...
    temporal_probe_layer: int = 1  # ... from each video token's residual entering this layer
    answer_probe_weight: float = 1.0  # probe: every token of the correct option's text ...
    answer_probe_layer: int = 3  # ... from the question's last token, residual entering this layer
    option_probe_weight: float = 1.0  # linear probe: which option is correct, from each option's last token ...
    option_probe_depth: int = 1  # ... residual entering layer n_layers - depth
    eval_every: int = 500  # quick validation accuracy (HF forward on cached tensors) in the log

    def __post_init__(self) -> None:
        n = self.num_hidden_layers
        for name in ("temporal_probe_layer", "answer_probe_layer"):
            if not 0 <= getattr(self, name) <= n:
                raise ValueError(f"{name}={getattr(self, name)} is out of range: the language model has {n} layers (valid 0..{n})")
        if not 1 <= self.option_probe_depth <= n:
            raise ValueError(f"option_probe_depth={self.option_probe_depth} is out of range (valid 1..{n})")


@dataclass(frozen=True, kw_only=True)
class EncodedExample:
    """One training example as tensors: the model inputs, the answer, and the auxiliary targets."""

    task: str
    input_ids: torch.Tensor  # [pos] int64, the video placeholder expanded by the processor
    pixel_values: torch.Tensor  # [frames, 3, height, width] float32, CLIP-normalised
    label: int  # token id of the correct option letter
    answer_index: int  # index of the correct option
    answer_tokens: torch.Tensor  # [ANSWER_SLOTS] token ids of " " + the correct option's text, -100 padded
    question_end: int  # position of the question's last token (just before "\nOptions:")
    option_ends: torch.Tensor  # [options] int64, position of each option's last token
    frame_targets: torch.Tensor  # [video_tokens, N_FRAME_STATISTICS], see frame_statistics
    # The same for the video played backwards (see reversed_copies).
    reversed_label: int
    reversed_answer_index: int
    reversed_answer_tokens: torch.Tensor


# ---------------------------------------------------------------------------------------- text


def render_text(processor: Any, example: VideoQAExample) -> str:
    """The exact text :func:`tl_video.prompts.prepare_example` feeds the processor for ``example``."""
    prompt = multiple_choice_prompt(example.question, example.options, example.answer_index)
    return render_prompt(processor, prompt.text, VIDEO_PLACEHOLDER, answer_prefix=MC_ANSWER_PREFIX)


def build_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``: ids 0..255 are bytes, then merges, then specials.

    The special tokens and chat template are those of
    :func:`tl_video.testing.tiny_llava_next_video.save_tiny_llava_next_video`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import TokenizersBackend
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from tl_video.testing.tiny_llava_next_video import SPECIAL_TOKENS, VICUNA_VIDEO_TEMPLATE

    def pre_tokenizer() -> Any:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)

    # Learn merges on the texts with the video placeholder removed (it is an atomic special token).
    corpus = [text.replace(VIDEO_PLACEHOLDER, " ") for text in texts]
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    learner.train_from_iterator(corpus, trainer)
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in json.loads(learner.to_str())["model"]["merges"]]

    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    extra = ["<video>", "<image>"]
    backend.add_special_tokens(list(dict.fromkeys([*SPECIAL_TOKENS.values(), *extra])))
    tokenizer = TokenizersBackend(tokenizer_object=backend, **SPECIAL_TOKENS)
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    tokenizer.chat_template = VICUNA_VIDEO_TEMPLATE
    return tokenizer


def init_for_training(hf_model: Any, seed: int) -> None:
    """Variance-preserving initialisation (std 1/sqrt(fan_in), zero bias) of the vision tower and projector.

    transformers' default (std 0.02 everywhere) leaves the projected video tokens nearly constant
    across frames at this width (the content part is ~1/5 of their norm), and training then sits
    on a long plateau. The language model keeps transformers' initialisation.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, module in hf_model.named_modules():
        if not name.startswith(("model.vision_tower", "model.multi_modal_projector")):
            continue
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        with torch.no_grad():
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * module.weight[0].numel() ** -0.5)
            if module.bias is not None:
                module.bias.zero_()


# ---------------------------------------------------------------------------------------- data


def letter_ids(tokenizer: Any, text: str, n_options: int) -> list[int]:
    """Token id of each option letter right after ``text`` (resolved in context)."""
    return [answer_token_id(tokenizer, text, letter) for letter in OPTION_LETTERS[:n_options]]


ANSWER_SLOTS = 16


def question_end_position(processor: Any, example: VideoQAExample, text: str, input_ids: torch.Tensor) -> int:
    """Position in ``input_ids`` (video placeholder expanded) of the question's last token."""
    prompt = multiple_choice_prompt(example.question, example.options, example.answer_index)
    cut = text.index(prompt.text) + prompt.spans["question_without_options"][1]
    encoding = processor.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ends = [end for _, end in encoding["offset_mapping"]]
    video_id = processor.tokenizer.convert_tokens_to_ids(VIDEO_PLACEHOLDER)
    token = ends.index(cut)
    if token < encoding["input_ids"].index(video_id):
        raise ValueError(f"{example.example_id}: the question comes before the video")
    return token + int((input_ids == video_id).sum()) - 1


def answer_slots(tokenizer: Any, answer: str) -> torch.Tensor:
    """The token ids of " " + ``answer`` in ANSWER_SLOTS slots (-100 after the end)."""
    ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    if len(ids) > ANSWER_SLOTS:
        raise ValueError(f"the answer {answer!r} is {len(ids)} tokens, more than {ANSWER_SLOTS} slots")
    return torch.tensor(ids + [-100] * (ANSWER_SLOTS - len(ids)))


def option_end_positions(processor: Any, example: VideoQAExample, text: str, input_ids: torch.Tensor) -> torch.Tensor:
    """Position in ``input_ids`` (video placeholder expanded) of the last token of each option."""
    prompt = multiple_choice_prompt(example.question, example.options, example.answer_index)
    offset = text.index(prompt.text)
    encoding = processor.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ends = [end for _, end in encoding["offset_mapping"]]
    video_id = processor.tokenizer.convert_tokens_to_ids(VIDEO_PLACEHOLDER)
    placeholder = encoding["input_ids"].index(video_id)
    shift = int((input_ids == video_id).sum()) - 1
    positions = []
    for letter in OPTION_LETTERS[: len(example.options)]:
        token = ends.index(offset + prompt.spans[f"option[{letter}]"][1])
        positions.append(token + (shift if token > placeholder else 0))
    return torch.tensor(positions)


N_FRAME_STATISTICS = 9


def frame_statistics(pixel_values: torch.Tensor, mean: Sequence[float], std: Sequence[float], side: int) -> torch.Tensor:
    """Pixel statistics of the image region under each video token, ``[frames * side * side, 9]``.

    Per region (frame, row, col), in the token order of the LLaVA-NeXT-Video front end: mean RGB,
    the fraction of foreground pixels (farther than 0.15 from the dark-grey background of the
    synthetic videos in some channel), their centroid (x, y in [-1, 1] over the whole frame, 0 if
    none) and their mean RGB (0 if none). Targets of the auxiliary frame probe.
    """
    from tl_video.data.drawing import BACKGROUND

    rgb = pixel_values * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]  # [T, 3, H, W] in [0, 1]
    frames, _, height, width = rgb.shape
    foreground = ((rgb - torch.tensor(BACKGROUND)[:, None, None] / 255).abs().amax(1) > 0.15).float()  # [T, H, W]
    ys = torch.linspace(-1, 1, height)[:, None].expand(height, width)
    xs = torch.linspace(-1, 1, width)[None, :].expand(height, width)

    def regions(x: torch.Tensor) -> torch.Tensor:  # [T, ..., H, W] -> [T * side * side, ...] region sums
        x = x.unflatten(-2, (side, height // side)).unflatten(-1, (side, width // side)).sum((-3, -1))  # [T, ..., s, s]
        return x.flatten(-2).movedim(-1, 1).flatten(0, 1)

    area = regions(torch.ones_like(foreground))
    fg = regions(foreground)
    safe = fg.clamp(min=1)[:, None]
    stats = [
        regions(rgb) / area[:, None],
        (fg / area)[:, None],
        torch.stack([regions(foreground * xs), regions(foreground * ys)], 1) / safe,
        regions(rgb * foreground[:, None]) / safe,
    ]
    return torch.cat(stats, 1)


def encode_examples(
    processor: Any,
    examples: Sequence[VideoQAExample],
    frames: Sequence[np.ndarray],
    *,
    progress: bool = False,
) -> list[EncodedExample]:
    """Run the checkpoint's processor once per example (text + decoded frames) and keep the tensors."""
    encoded = []
    video_id = processor.tokenizer.convert_tokens_to_ids(VIDEO_PLACEHOLDER)
    for example, clip in tqdm(list(zip(examples, frames, strict=True)), desc="processor", unit="video", disable=not progress, file=sys.stderr):
        text = render_text(processor, example)
        processed = processor(text=text, videos=[clip], return_tensors="pt")
        letters = letter_ids(processor.tokenizer, text, len(example.options))
        reversed_index = example.metadata["reversed_answer_index"]
        input_ids = processed["input_ids"][0]
        tokens_per_frame = int((input_ids == video_id).sum()) // len(clip)
        video_processor = processor.video_processor
        encoded.append(
            EncodedExample(
                task=example.task or "",
                input_ids=input_ids,
                pixel_values=processed["pixel_values_videos"][0],
                label=letters[example.answer_index],
                answer_index=example.answer_index,
                answer_tokens=answer_slots(processor.tokenizer, example.options[example.answer_index]),
                question_end=question_end_position(processor, example, text, input_ids),
                option_ends=option_end_positions(processor, example, text, input_ids),
                frame_targets=frame_statistics(
                    processed["pixel_values_videos"][0], video_processor.image_mean, video_processor.image_std,
                    int(round(tokens_per_frame**0.5)),
                ),
                reversed_label=letters[reversed_index],
                reversed_answer_index=reversed_index,
                reversed_answer_tokens=answer_slots(processor.tokenizer, example.options[reversed_index]),
            )
        )
    return encoded


def reversed_copies(encoded: Sequence[EncodedExample]) -> list[EncodedExample]:
    """The same prompts with the frames in reverse order, labelled with the reversed answer.

    The processor treats frames independently, so flipping processed frames equals processing
    reversed frames.
    """
    def flipped(item: EncodedExample) -> EncodedExample:
        return replace(
            item, pixel_values=item.pixel_values.flip(0), label=item.reversed_label, reversed_label=item.label,
            answer_index=item.reversed_answer_index, reversed_answer_index=item.answer_index,
            answer_tokens=item.reversed_answer_tokens, reversed_answer_tokens=item.answer_tokens,
            frame_targets=item.frame_targets.unflatten(0, (item.pixel_values.shape[0], -1)).flip(0).flatten(0, 1),
        )

    return [flipped(item) for item in encoded]


def render_and_decode(
    out_dir: Path, n_per_task: int, seed: int, file_frames: int, size: int, num_frames: int, *, progress: bool = False
) -> tuple[tuple[VideoQAExample, ...], list[np.ndarray]]:
    """Render the benchmark to ``out_dir`` as mp4 files and decode ``num_frames`` frames of each."""
    from tl_video.data.synthetic import generate_benchmark
    from tl_video.video import read_video

    examples = generate_benchmark(out_dir, n_per_task, seed, file_frames, size, progress=progress)
    frames = [
        read_video(example.video, num_frames=num_frames).frames
        for example in tqdm(examples, desc="decode", unit="video", disable=not progress, file=sys.stderr)
    ]
    return examples, frames


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, stacked frames, the last real position and the labels."""
    lengths = torch.tensor([item.input_ids.shape[0] for item in batch])
    ids = torch.full((len(batch), int(lengths.max())), pad_id, dtype=torch.long)
    for row, item in enumerate(batch):
        ids[row, : item.input_ids.shape[0]] = item.input_ids
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values_videos": torch.stack([item.pixel_values for item in batch]),
        "last": lengths - 1,
        "labels": torch.tensor([item.label for item in batch]),
        "option_ends": torch.stack([item.option_ends for item in batch]),
        "answer_index": torch.tensor([item.answer_index for item in batch]),
        "frame_targets": torch.stack([item.frame_targets for item in batch]),
        "question_end": torch.tensor([item.question_end for item in batch]),
        "answer_tokens": torch.stack([item.answer_tokens for item in batch]),
    }


def answer_logits(hf_model: Any, batch: dict[str, torch.Tensor], output_hidden_states: bool = False) -> Any:
    """Logits ``[batch, vocab]`` at the last real token of each right-padded prompt (and the hidden states)."""
    output = hf_model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        pixel_values_videos=batch["pixel_values_videos"], output_hidden_states=output_hidden_states,
    )
    hidden = output.last_hidden_state[torch.arange(batch["input_ids"].shape[0]), batch["last"]]
    logits = hf_model.lm_head(hidden)
    return (logits, output.hidden_states) if output_hidden_states else logits


@torch.no_grad()
def quick_accuracy(hf_model: Any, encoded: Sequence[EncodedExample], pad_id: int, batch_size: int = 64) -> dict[str, float]:
    """Per-task accuracy of the HF model (argmax over the whole vocabulary) on encoded examples."""
    was_training = hf_model.training
    hf_model.eval()
    hits: dict[str, list[bool]] = {}
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        predicted = answer_logits(hf_model, collate(chunk, pad_id)).argmax(-1)
        for item, guess in zip(chunk, predicted.tolist(), strict=True):
            hits.setdefault(item.task, []).append(guess == item.label)
    hf_model.train(was_training)
    return {task: float(np.mean(values)) for task, values in hits.items()}


# ---------------------------------------------------------------------------------------- training


def _frame_deltas(targets: torch.Tensor, per_frame: int) -> torch.Tensor:
    """``[batch, video_tokens, 2k]``: statistics minus those of the same region one frame earlier
    (0 at frame 0), and their absolute values (so that "something changed" is linear too)."""
    previous = torch.cat([targets[:, :per_frame], targets[:, :-per_frame]], 1)
    delta = targets - previous
    return torch.cat([delta, delta.abs()], -1)


def lr_at(step: int, config: ToyTrainingConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class AuxiliaryProbes(torch.nn.Module):
    """The auxiliary probes of a training run; they shape the model's residual stream and are then discarded.

    - option probe: LayerNorm + linear on the residual entering layer ``n_layers - option_probe_depth``
      at each option's last token; softmax over the options, cross-entropy with the correct one.
    - answer probe: LayerNorm + linear on the residual entering ``answer_probe_layer`` at the
      question's last token, predicting every token of the correct option's text (one slot each).
    - frame probe: linear on each projected video token (the language model's input), regressing
      the standardised pixel statistics of its frame region (:func:`frame_statistics`).
    - temporal probe: linear on each video token's residual entering ``temporal_probe_layer``,
      regressing the change of those statistics since the previous frame and its magnitude.
    """

    def __init__(self, hf_model: Any, data: Sequence[EncodedExample], config: ToyTrainingConfig):
        super().__init__()
        text = hf_model.config.text_config
        d_model = text.hidden_size
        self.config = config
        self.video_id = hf_model.config.video_token_index
        self.option_layer = text.num_hidden_layers - config.option_probe_depth
        self.per_frame = data[0].frame_targets.shape[0] // data[0].pixel_values.shape[0]
        targets = torch.cat([item.frame_targets for item in data])
        deltas = torch.cat([_frame_deltas(item.frame_targets[None], self.per_frame)[0] for item in data])
        self.register_buffer("target_mean", targets.mean(0))
        self.register_buffer("target_std", targets.std(0).clamp(min=1e-3))
        self.register_buffer("delta_std", deltas.std(0).clamp(min=1e-3))
        # Created in this order, from the global generator (seeded by the run).
        self.option = torch.nn.Sequential(torch.nn.LayerNorm(d_model), torch.nn.Linear(d_model, 1))
        self.answer = torch.nn.Sequential(torch.nn.LayerNorm(d_model), torch.nn.Linear(d_model, ANSWER_SLOTS * text.vocab_size))
        self.frame = torch.nn.Linear(d_model, targets.shape[1])
        self.temporal = torch.nn.Linear(d_model, deltas.shape[1])

    def losses(self, hidden_states: Sequence[torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Probe name -> loss, for the probes with a positive weight."""
        config, rows = self.config, torch.arange(batch["input_ids"].shape[0])
        is_video = batch["input_ids"] == self.video_id
        losses = {}
        if config.option_probe_weight > 0:
            at_options = hidden_states[self.option_layer][rows[:, None], batch["option_ends"]]  # [batch, options, d_model]
            losses["option"] = F.cross_entropy(self.option(at_options).squeeze(-1), batch["answer_index"])
        if config.answer_probe_weight > 0:
            at_question = hidden_states[config.answer_probe_layer][rows, batch["question_end"]]  # [batch, d_model]
            slots = self.answer(at_question).unflatten(-1, (ANSWER_SLOTS, -1))  # [batch, slots, vocab]
            losses["answer"] = F.cross_entropy(slots.flatten(0, 1), batch["answer_tokens"].flatten(), ignore_index=-100)
        if config.frame_probe_weight > 0:
            wanted = ((batch["frame_targets"] - self.target_mean) / self.target_std).flatten(0, 1)
            losses["frame"] = F.mse_loss(self.frame(hidden_states[0][is_video]), wanted)
        if config.temporal_probe_weight > 0:
            wanted = (_frame_deltas(batch["frame_targets"], self.per_frame) / self.delta_std).flatten(0, 1)
            losses["temporal"] = F.mse_loss(self.temporal(hidden_states[config.temporal_probe_layer][is_video]), wanted)
        return losses

    def weight(self, name: str) -> float:
        return getattr(self.config, f"{name}_probe_weight")


def train(
    hf_model: Any,
    data: Sequence[EncodedExample],
    config: ToyTrainingConfig,
    *,
    pad_id: int,
    validation: Sequence[EncodedExample] = (),
    log: Callable[[dict[str, Any]], None] = lambda record: None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``hf_model`` in place with AdamW; return the log records (one per step).

    Loss: cross-entropy of the answer letter at the last token (``answer_weight``) plus the
    weighted losses of the :class:`AuxiliaryProbes`. A record holds step, loss (the answer
    loss), lr, elapsed seconds, each probe's loss and, every ``eval_every`` steps, the
    per-task accuracy on ``validation``.
    """
    generator = torch.Generator().manual_seed(config.seed)
    decay = [p for n, p in hf_model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in hf_model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    probes = AuxiliaryProbes(hf_model, data, config)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": list(probes.parameters()), "weight_decay": 0.0},
        ],
        lr=config.lr, betas=(0.9, 0.98),
    )
    hf_model.train()
    records = []
    order, cursor = torch.randperm(len(data), generator=generator), 0
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train", unit="step", disable=not progress, file=sys.stderr)
    for step in bar:
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(len(data), generator=generator), 0
        batch = collate([data[i] for i in order[cursor : cursor + config.batch_size].tolist()], pad_id)
        cursor += config.batch_size
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, hidden_states = answer_logits(hf_model, batch, output_hidden_states=True)
        loss = F.cross_entropy(logits, batch["labels"])
        total = config.answer_weight * loss
        probe_losses = probes.losses(hidden_states, batch)
        for name, value in probe_losses.items():
            total = total + probes.weight(name) * value
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(hf_model.parameters(), config.grad_clip)
        optimizer.step()
        record: dict[str, Any] = {"step": step + 1, "loss": loss.item(), "lr": lr, "elapsed": round(time.perf_counter() - start, 3)}
        record |= {f"{name}_probe_loss": value.item() for name, value in probe_losses.items()}
        if validation and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            record["val_accuracy"] = quick_accuracy(hf_model, validation, pad_id)
        records.append(record)
        log(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.1e}")
    hf_model.eval()
    return records


# ---------------------------------------------------------------------------------------- model card


def model_card(summary: dict[str, Any], table: str) -> str:
    """The README.md beside the weights: what the model is, how it was made, what it measured, what it is not."""
    c = summary["config"]
    t = summary["timings"]
    tokens_per_frame = (c["image_size"] // c["patch_size"]) ** 2 // 4
    variants = ", ".join(f"{frames} frames at {size}x{size} px" for frames, size in c["train_variants"])
    n_tasks = len(summary["evaluation"]["rows"]) // 3 or 5
    n_train = c["train_per_task"] * len(c["train_variants"]) * n_tasks
    heldout_frames, heldout_size = c["heldout_variant"]
    defaults = asdict(ToyTrainingConfig())
    flags = {"steps": "--steps", "train_per_task": "--train-per-task", "heldout_per_task": "--heldout-per-task"}
    command = "python -m tl_video.training.train_toy --out tl_video/builtin/toy_temporal --seed " + str(c["seed"])
    command += "".join(f" {flag} {c[name]}" for name, flag in flags.items() if c[name] != defaults[name])
    auxiliaries = [
        (c["frame_probe_weight"], f"**frame probe** (weight {c['frame_probe_weight']}): a linear probe on each projected video token (the language model's input) regresses pixel statistics of its frame region: mean RGB, foreground fraction, foreground centroid, foreground RGB (`frame_statistics`)"),
        (c["temporal_probe_weight"], f"**temporal probe** (weight {c['temporal_probe_weight']}): a linear probe on each video token's residual entering layer {c['temporal_probe_layer']} regresses the change of those statistics since the previous frame, and its absolute value"),
        (c["answer_probe_weight"], f"**answer probe** (weight {c['answer_probe_weight']}): a probe on the residual entering layer {c['answer_probe_layer']} at the question's last token (\"?\") predicts every token of the correct option's text, one slot per token"),
        (c["option_probe_weight"], f"**option probe** (weight {c['option_probe_weight']}): a linear probe on the residual entering layer {c['num_hidden_layers'] - c['option_probe_depth']} at the last token of each option scores the options; cross-entropy against the correct one"),
    ]
    aux_lines = "\n".join(f"- {text}" for weight, text in auxiliaries if weight > 0) or "- none"
    return f"""# tl-video/toy-temporal

A tiny **LLaVA-NeXT-Video** checkpoint (`LlavaNextVideoForConditionalGeneration`), trained by
tl_video on its synthetic temporal VideoQA benchmark (`tl_video.data.synthetic`), shipped
inside the package as the built-in default model for circuit analyses:

```python
from tl_video import HookedVideoTransformer
model = HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
```

It is loaded through exactly the same `from_pretrained` path as a hub checkpoint (config.json,
model.safetensors, tokenizer and processor files; transformers loads it too:
`LlavaNextVideoForConditionalGeneration.from_pretrained(<this folder>)`).

**What it is not.** A toy: it answers only the five synthetic tasks, in the exact prompt
format below, on 8-frame clips of flat shapes and textures. It knows no language beyond that
template and nothing about real videos. Its accuracies are not a benchmark result and are not
comparable to TVBench, MVBench or any published VideoLLM number. It exists so that analyses of
temporal information flow have a small model whose answers provably depend on cross-frame
information.

## Architecture

| part | configuration |
|---|---|
| vision tower | CLIP ViT, {c["vision_num_hidden_layers"]} layers, width {c["vision_hidden_size"]}, {c["vision_num_attention_heads"]} heads, MLP {c["vision_intermediate_size"]}, image {c["image_size"]}x{c["image_size"]} px, patch {c["patch_size"]} ({(c["image_size"] // c["patch_size"]) ** 2} patches per frame), feature layer {c["vision_feature_layer"]}, CLS dropped |
| pooling | LLaVA-NeXT-Video 2x2 average pool: **{tokens_per_frame} video token{"s" if tokens_per_frame > 1 else ""} per frame** ({tokens_per_frame * c["num_frames"]} per video) |
| projector | linear - GELU - linear, {c["vision_hidden_size"]} -> {c["hidden_size"]} |
| language model | Llama, {c["num_hidden_layers"]} layers, d_model {c["hidden_size"]}, {c["num_attention_heads"]} heads ({c["num_key_value_heads"]} key/value heads), MLP {c["intermediate_size"]} (SwiGLU), RMSNorm, RoPE (theta 10000), untied unembedding |
| tokenizer | byte-level BPE trained on the training prompts (every word of the benchmark is one token; any other text falls back to bytes): {summary["vocab_size"]} tokens = 256 bytes + merges + `<s> </s> <unk> <pad> <video> <image>`; Vicuna chat template |
| frames | **{c["num_frames"]} frames** per video (the library default; `num_frames` in config.json), sampled at segment midpoints |
| parameters | {summary["n_parameters"]:,} (float32) |
| size on disk | {summary["checkpoint_bytes"] / 1e6:.2f} MB for the checkpoint files (config, safetensors, tokenizer, processor) |

## Prompt

Exactly what `tl_video.prompts.prepare_example` renders: the video first, then the paper's
multiple-choice prompt, then the answer prefix; the answer is the next token (the option letter).

```
<s>USER: <video>
Question: In which direction does the red circle move?
Options:
(A) up
(B) to the left
(C) down
(D) to the right
Only give the best option. ASSISTANT: Best option:(
```

## Data

The synthetic benchmark's five tasks (moving_direction, action_sequence, object_count,
scene_transition, antonym), 4-way multiple choice, rendered as real mp4 files and decoded with
decord ({c["num_frames"]} frames at segment midpoints). Training: {c["train_per_task"]} videos per task
for each of {variants} (seeds {", ".join(str(benchmark_seed(c["seed"], k)) for k in range(len(c["train_variants"])))}; {n_train:,} videos){", plus every training video reversed in time and labelled with its reversed answer" if c["reverse_augment"] else ""}:
{summary["n_training_sequences"]:,} training sequences in all. The held-out set below was rendered with seed
{summary["heldout_seed"]} ({c["heldout_per_task"]} per task, {heldout_frames} frames at {heldout_size}x{heldout_size} px, the benchmark's defaults), never seen in training.

## Training

```
{command}
```

All weights trained from scratch with AdamW (betas 0.9/0.98, weight decay {c["weight_decay"]} on matrices),
{c["steps"]} steps of batch {c["batch_size"]}, learning rate {c["lr"]} with {c["warmup_steps"]} warm-up steps and cosine decay to
{c["lr"] * c["min_lr_ratio"]:.1e}, gradient clipping {c["grad_clip"]}, float32, seed {c["seed"]}. Vision tower and projector
weights start from std 1/sqrt(fan_in) (zero biases), the language model from transformers' default
(std 0.02).

Main loss: cross-entropy of the answer letter token after "Best option:(" (weight {c["answer_weight"]}).
Auxiliary losses, whose probes are discarded after training (the checkpoint holds only the
LLaVA-NeXT-Video weights):

{aux_lines}

Keep them in mind when interpreting circuits: they shape where the model computes (pixel
statistics are linear in the video tokens, frame-to-frame changes are linear after layer
{c["temporal_probe_layer"]}, the last token of the question encodes the answer's text, option tokens encode
whether they are correct).

Wall time of the run on {summary["torch_threads"]} CPU threads, measured inside the command (Python start-up and
imports excluded): **{t["total_s"] / 60:.1f} min** (rendering and decoding {t["data_s"]:.0f} s, tokenizer, model and
processing {t["prepare_s"]:.0f} s, training {t["train_s"]:.0f} s, held-out evaluation {t["evaluate_s"]:.0f} s); other jobs may
have shared the machine. `training_log.jsonl` holds step, loss, learning rate and
elapsed seconds of every step (plus the auxiliary losses and a quick validation accuracy on
{c["validation_per_task"]} videos per task, seed {benchmark_seed(c["seed"], VALIDATION_PART)}).

Re-running the command repeats the recipe exactly (same videos, order and initialisation); the
weights agree only up to floating-point summation order (BLAS threads, memory alignment), and
that difference grows over training: a re-run gives similar accuracies, not the same bytes.

## Accuracy (measured)

Held-out set (seed {summary["heldout_seed"]}, {c["heldout_per_task"]} videos per task), computed by
`tl_video.training.evaluate_toy.evaluate_toy` with `HookedVideoTransformer` on this checkpoint:
argmax over the option letters of the next-token logits. **clean**: the video as decoded, target
the correct option. **frozen**: every frame replaced by the middle one (`tl_video.video.freeze`),
target still the correct option: a model that needs cross-frame information falls to what the
options alone allow. That is 25% for moving_direction, action_sequence and scene_transition, but
more for two tasks whose options carry a prior: antonym's "It stays the same size." and "It
changes colour." are never correct (50% by guessing between grow and shrink), and
object_count's answer is always 2-5 while its distractors range over 1-6. **reversed**: frames in reverse order (`tl_video.video.reverse`), target the
reversed answer (direction flipped, order reversed, scenes swapped, grow <-> shrink; the count
is unchanged).

{table}
"""


# ---------------------------------------------------------------------------------------- the run


def benchmark_seed(seed: int, part: int) -> int:
    """Seed of one rendered part of a run: training variant ``k`` is part ``k``, validation 98, held-out 99."""
    return 100 * seed + part


VALIDATION_PART, HELDOUT_PART = 98, 99


def build_checkpoint(config: ToyTrainingConfig, folder: Path, texts: Sequence[str]) -> tuple[Any, Any]:
    """Train the tokenizer on ``texts``, save the untrained checkpoint to ``folder``, load it back with transformers."""
    from transformers import AutoProcessor, LlavaNextVideoForConditionalGeneration

    from tl_video.testing.tiny_llava_next_video import save_tiny_llava_next_video

    save_tiny_llava_next_video(
        folder,
        tokenizer=build_tokenizer(texts, config.vocab_size),
        num_key_value_heads=config.num_key_value_heads,
        num_hidden_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        image_size=config.image_size,
        patch_size=config.patch_size,
        seed=config.seed,
        vision_hidden_size=config.vision_hidden_size,
        vision_intermediate_size=config.vision_intermediate_size,
        vision_num_hidden_layers=config.vision_num_hidden_layers,
        vision_num_attention_heads=config.vision_num_attention_heads,
        vision_feature_layer=config.vision_feature_layer,
        widen_init=False,
        extra_config={"num_frames": config.num_frames},
    )
    hf_model = LlavaNextVideoForConditionalGeneration.from_pretrained(folder)
    init_for_training(hf_model, config.seed)
    return hf_model, AutoProcessor.from_pretrained(folder)


def template_processor(folder: Path) -> Any:
    """A processor with the checkpoint's chat template (byte tokenizer), to render prompts before the tokenizer exists."""
    from transformers import AutoProcessor

    from tl_video.testing.tiny_llava_next_video import save_tiny_llava_next_video

    return AutoProcessor.from_pretrained(save_tiny_llava_next_video(folder))


def folder_size(folder: Path, exclude: Sequence[str] = ()) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name not in exclude)


def _prepare_out_dir(out_dir: Path) -> None:
    """Empty ``out_dir`` of a previous checkpoint; refuse a non-empty folder that is not one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [p for p in out_dir.iterdir()]
    if files and not (out_dir / "config.json").exists():
        raise FileExistsError(f"{out_dir} is not empty and holds no checkpoint (config.json); choose an empty folder")
    for path in files:
        if path.is_dir():
            raise FileExistsError(f"{out_dir} holds a folder {path.name!r}; a checkpoint folder has only files")
        path.unlink()


def run(config: ToyTrainingConfig, out_dir: str | Path, *, work_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """The whole recipe (module docstring): data, tokenizer, model, training, checkpoint, evaluation, card."""
    from tl_video.model.hooked_video_transformer import HookedVideoTransformer
    from tl_video.training.evaluate_toy import evaluate_toy

    started = time.perf_counter()
    out_dir = Path(out_dir)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tl_video_toy_") as temporary:
        work = Path(work_dir) if work_dir is not None else Path(temporary)
        work.mkdir(parents=True, exist_ok=True)

        # 1. training and validation videos: real mp4 files, decoded once
        examples: list[VideoQAExample] = []
        frames: list[np.ndarray] = []
        for part, (file_frames, size) in enumerate(config.train_variants):
            rendered, decoded = render_and_decode(
                work / f"train_{part}", config.train_per_task, benchmark_seed(config.seed, part), file_frames, size,
                config.num_frames, progress=progress,
            )
            examples += rendered
            frames += decoded
        validation_examples, validation_frames = render_and_decode(
            work / "validation", config.validation_per_task, benchmark_seed(config.seed, VALIDATION_PART),
            *config.heldout_variant, config.num_frames, progress=progress,
        )
        timings["data_s"] = time.perf_counter() - started

        # 2-3. tokenizer and model
        template = template_processor(work / "template")
        hf_model, processor = build_checkpoint(config, work / "init", [render_text(template, e) for e in examples])

        # 4. model inputs, once
        data = encode_examples(processor, examples, frames, progress=progress)
        del frames
        if config.reverse_augment:
            data += reversed_copies(data)
        validation = encode_examples(processor, validation_examples, validation_frames)
        timings["prepare_s"] = time.perf_counter() - started - timings["data_s"]

        # 5. training, logged as it goes
        _prepare_out_dir(out_dir)
        with open(out_dir / "training_log.jsonl", "w") as log_file:
            def log(record: dict[str, Any]) -> None:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()

            train_started = time.perf_counter()
            records = train(
                hf_model, data, config, pad_id=processor.tokenizer.pad_token_id, validation=validation, log=log,
                progress=progress,
            )
        timings["train_s"] = time.perf_counter() - train_started

        # 6. the checkpoint, exactly as a hub model is saved
        hf_model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        checkpoint_bytes = folder_size(out_dir, exclude=("training_log.jsonl",))
        n_parameters = sum(p.numel() for p in hf_model.parameters())

        # 7. held-out evaluation with our model, through real mp4 files
        evaluation_started = time.perf_counter()
        heldout_seed = benchmark_seed(config.seed, HELDOUT_PART)
        from tl_video.data.synthetic import generate_benchmark

        heldout = generate_benchmark(work / "heldout", config.heldout_per_task, heldout_seed, *config.heldout_variant)
        model = HookedVideoTransformer.from_pretrained(out_dir)
        evaluation = evaluate_toy(model, heldout, num_frames=config.num_frames, progress=progress)
        timings["evaluate_s"] = time.perf_counter() - evaluation_started
    timings["total_s"] = time.perf_counter() - started

    summary = {
        "config": asdict(config),
        "evaluation": evaluation.to_json(),
        "heldout_seed": heldout_seed,
        "n_parameters": n_parameters,
        "checkpoint_bytes": checkpoint_bytes,
        "n_training_sequences": len(data),
        "final_loss": records[-1]["loss"],
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),
        "vocab_size": hf_model.config.text_config.vocab_size,
    }
    (out_dir / "README.md").write_text(model_card(summary, evaluation.markdown_table()))
    summary["folder_bytes"] = folder_size(out_dir)
    summary["table"] = evaluation.markdown_table()
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tl_video.training.train_toy --out DIR [--seed S] [--steps N] ...``."""
    defaults = ToyTrainingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m tl_video.training.train_toy",
        description="Train the built-in toy VideoLLM (tl-video/toy-temporal) on the synthetic temporal VideoQA benchmark.",
    )
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder (emptied first if it holds a checkpoint)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"the one seed of the run (default: {defaults.seed})")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"optimiser steps (default: {defaults.steps})")
    parser.add_argument("--train-per-task", type=int, default=defaults.train_per_task, help="training videos per task and variant")
    parser.add_argument("--heldout-per-task", type=int, default=defaults.heldout_per_task, help="held-out videos per task for the card")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the rendered videos here (default: a temporary folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    config = replace(defaults, seed=args.seed, steps=args.steps, train_per_task=args.train_per_task, heldout_per_task=args.heldout_per_task)
    summary = run(config, args.out, work_dir=args.work_dir, progress=not args.no_progress)
    print(json.dumps({k: summary[k] for k in ("checkpoint_bytes", "folder_bytes", "timings", "final_loss")}))
    print(summary["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
