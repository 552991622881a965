"""Shared parity checks: our model and HF's reference, each loaded on its own, compared layer by layer.

A family's parity test states only what differs (how HF's inputs are built, which HF rows carry an
extra feature); loading the pair, the comparisons, the tolerances and the error that names the
worst layer live here.

Measured values: every `assert_matches_hf` prints one line (`pytest -s` shows it) and, when the
environment variable `TL_VIDEO_PARITY_TABLE` names a file, appends a JSON record to it, so the
parity table can be quoted from a run:

    TL_VIDEO_PARITY_TABLE=/tmp/parity.jsonl python -m pytest -q tests/test_parity_internvl.py -k logits
    python -m tests.parity /tmp/parity.jsonl     # prints the table
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch

import tl_video
from tests.oracles import (
    assert_half_precision_close,
    assert_same_prompt,
    hf_chat_inputs,
    max_diff,
    reference_model,
    reference_processor,
)
from tests.tolerances import LOGITS_FP32, PATTERN_FP32, RESIDUAL_FP32

PROMPT = "What happens in the video?"
TABLE_ENV = "TL_VIDEO_PARITY_TABLE"
_CACHED = ("hook_resid_pre", "hook_pattern", "hook_resid_post")


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


@dataclass(frozen=True)
class ParityReport:
    """The largest |ours - HF| of one input, per compared quantity, with the layer where it occurs."""

    where: str
    logits: float
    residual: float  # over every layer's resid_pre
    residual_layer: int
    pattern: float  # over every layer's attention pattern
    pattern_layer: int
    final_norm: float  # ln_final(last resid_post) vs HF's final-normed hidden state

    def describe(self, quantity: str) -> str:
        """What a quantity compares, naming the worst layer where there is one."""
        return {
            "logits": "logits", "residual": f"resid_pre of layer {self.residual_layer}",
            "pattern": f"pattern of layer {self.pattern_layer}", "final_norm": "final-normed residual",
        }[quantity]

    def line(self) -> str:
        return (
            f"parity {self.where}: logits {self.logits:.2e}, resid_pre {self.residual:.2e} (layer "
            f"{self.residual_layer}), pattern {self.pattern:.2e} (layer {self.pattern_layer}), "
            f"final norm {self.final_norm:.2e}"
        )


def _worst(diffs: list[float]) -> tuple[float, int]:
    layer = int(np.argmax(diffs))
    return diffs[layer], layer


def _record(report: ParityReport) -> None:
    print(report.line())
    table = os.environ.get(TABLE_ENV)
    if table:
        with open(table, "a") as file:
            file.write(json.dumps(asdict(report)) + "\n")


@torch.no_grad()
def assert_matches_hf(
    model,
    hf,
    prepared,
    processed: dict[str, Any],
    *,
    where: str,
    expected_resid_pre: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> ParityReport:
    """Logits, every layer's resid_pre and attention pattern, and the final norm agree with HF (fp32).

    HF runs `hf(**processed)` (its own inputs: ids and pixels, or `inputs_embeds`) with hidden
    states and attentions; we run `prepared.tokens`. HF's `hidden_states[l]` is the residual
    entering layer l and its last entry is after the final norm. `expected_resid_pre(layer, hf_row)`
    lets a family add what HF records elsewhere (Qwen3-VL's DeepStack features). One assertion lists
    every quantity over its bound, naming the worst layer and its value; the measured maxima are
    returned and recorded (module docstring).
    """
    reference = hf(**processed, output_hidden_states=True, output_attentions=True)
    logits, cache = model.run_with_cache(prepared.tokens, names_filter=lambda name: name.endswith(_CACHED))
    residuals, patterns = [], []
    for layer in range(model.cfg.n_layers):
        expected = reference.hidden_states[layer]
        if expected_resid_pre is not None:
            expected = expected_resid_pre(layer, expected)
        residuals.append(max_diff(cache[f"blocks.{layer}.hook_resid_pre"], expected))
        patterns.append(max_diff(cache[f"blocks.{layer}.attn.hook_pattern"], reference.attentions[layer]))
    final = model.ln_final(cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"])
    report = ParityReport(
        where, max_diff(logits, reference.logits), *_worst(residuals), *_worst(patterns),
        max_diff(final, reference.hidden_states[-1]),
    )
    _record(report)
    bounds = {"logits": LOGITS_FP32, "residual": RESIDUAL_FP32, "pattern": PATTERN_FP32, "final_norm": RESIDUAL_FP32}
    failures = [
        f"{report.describe(name)} {'differ' if name == 'logits' else 'differs'} by {getattr(report, name):.2e} (bound {bound})"
        for name, bound in bounds.items() if not getattr(report, name) <= bound
    ]
    assert not failures, f"{where}: " + "; ".join(failures)
    return report


@torch.no_grad()
def assert_greedy_matches_hf(model, hf, prepared, processed: dict[str, Any], max_new_tokens: int = 8) -> None:
    """Our greedy continuation equals `hf.generate`'s on HF's own inputs (ids or `inputs_embeds`)."""
    expected = hf.generate(**processed, max_new_tokens=max_new_tokens, do_sample=False, min_new_tokens=max_new_tokens)
    ours = model.generate(prepared.tokens, max_new_tokens=max_new_tokens, stop_at_eos=False)
    assert ours[0, prepared.tokens.shape[1]:].tolist() == expected[0, -max_new_tokens:].tolist()


def assert_half_precision_matches_hf(
    folder,
    dtype: torch.dtype,
    videos: dict[str, np.ndarray],
    prepare: Callable[..., tuple[Any, dict[str, Any]]] = prepare_with_reference,
) -> None:
    """On each video, our `dtype` logits are as close to HF float32 as HF's own `dtype` run is.

    Against HF in float32 (tests/tolerances.py says why not HF in the same dtype).
    `prepare(model, processor, frames)` returns (our prepared input, HF's inputs).
    """
    model, hf_half, processor = load_pair(folder, dtype)
    hf_fp32 = reference_model(folder)
    for where, frames in videos.items():
        prepared, processed = prepare(model, processor, frames)
        with torch.no_grad():
            ours = model(prepared.tokens)
            half, exact = hf_half(**processed).logits, hf_fp32(**processed).logits
        assert ours.dtype == dtype
        assert_half_precision_close(ours, half, exact, where=where)


def print_table(path: str) -> None:
    """The recorded parity maxima as a Markdown table (one row per recorded check)."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| check | logits | resid_pre (worst layer) | pattern (worst layer) | final norm |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['where']} | {row['logits']:.1e} | {row['residual']:.1e} ({row['residual_layer']}) | "
            f"{row['pattern']:.1e} ({row['pattern_layer']}) | {row['final_norm']:.1e} |"
        )


if __name__ == "__main__":
    print_table(sys.argv[1])
