"""Peak tensor memory of each pipeline's core computation, measured on CPU against `tl_video.memory`.

Random LLaVA-NeXT-Video checkpoints of several sizes (benchmarks/shapes.py's builder, loaded through
the public path, with a larger vocabulary so the logits terms show) run each pipeline's core
computation on one prepared input:

- flow: `knockout_probabilities` (exact engine) over the cross-frame and vql-to-ql presets at every
  centre layer (the paper's window);
- pathways: the effective-pathway spec and its random baseline (exact engine, as `run_pathways`);
- patching: the corrupted and clean forwards, the clean `resid_pre` cache, the batched frame patching;
- lens: `video_token_top_k` and `option_probabilities_by_layer`;
- attention: `query_attention_to_video` for the question over every layer, with and without the
  cross-frame knockout;
- open_ended: greedy generation, then the probe under the cross-frame and vql-to-ql knockouts at the
  first answer token (the sweep engine) and after a continuation (the prompt rerun into a key/value cache).

Measured: the peak of live tensor storages created during the call (a TorchDispatchMode sees every
operator output; the model's parameters and buffers, the video bank included, exist before and are
added as their exact bytes). Memory inside an operator (a kernel's scratch space) is not seen; on
CPU the fused attention kernel's blocks are small. Each line:

    MEMORY <pipeline> <shape> estimated=<MiB> measured=<MiB> ratio=<est/meas> activations_estimated=... activations_measured=... activations_ratio=...

    python benchmarks/model_memory.py [--shapes s256x4,s512x8,s768x12] [--dtype float32]
    python benchmarks/model_memory.py --tables   # docs/memory.md's tables for published 7B / 72B models
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `tl_video` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.shapes import QUESTION, Shape, load
from tl_video.memory import PIPELINES, PeakTensorMemory, estimate_memory
from tl_video.testing import save_tiny_llava_next_video

VOCAB = 8192  # vocabulary of the benchmark checkpoints (the byte tokenizer's ids come first)
ANSWER_PREFIX = "Best option:("


@dataclass(frozen=True)
class Case:
    """A prepared model and input (and the corrupted copy patching needs)."""

    model: Any
    prepared: Any
    corrupted: Any
    shape: Shape


def build(shape: Shape, folder: Path, dtype: torch.dtype) -> Case:
    options = shape.checkpoint_options()
    checkpoint = save_tiny_llava_next_video(folder / shape.name, **options, text_fields={"vocab_size": VOCAB})
    model = load(checkpoint, dtype, "cpu", keep_hf_model=False)
    frames = np.random.RandomState(0).randint(0, 256, (shape.frames, 360, 480, 3), dtype=np.uint8)
    prepared = model.prepare(video=frames, prompt=QUESTION, answer_prefix=ANSWER_PREFIX)
    corrupted = model.prepare(video=frames[::-1].copy(), prompt=QUESTION, answer_prefix=ANSWER_PREFIX)
    return Case(model, prepared, corrupted, shape)


# ---------------------------------------------------------------------------------------- pipelines
FLOW_PRESETS = ("cross-frame", "vql-to-ql")  # 5 specs per centre layer; cross-frame resumes from the second frame on


def run_flow(case: Case) -> None:
    from tl_video.analyses.flow import default_window_k
    from tl_video.analyses.sweep import knockout_probabilities
    from tl_video.interventions.presets import preset
    from tl_video.interventions.windows import window_layers

    model, prepared = case.model, case.prepared
    n_layers = model.cfg.n_layers
    k = default_window_k(n_layers)
    specs = [spec for centre in range(n_layers) for name in FLOW_PRESETS
             for spec in preset(name, prepared.layout, window_layers(centre, n_layers, k, "center"))]
    knockout_probabilities(model, prepared, specs)


def run_pathways(case: Case) -> None:
    from tl_video.analyses.sweep import knockout_probabilities
    from tl_video.interventions.presets import effective_pathway_spec, random_baseline_for

    model, prepared = case.model, case.prepared
    n = model.cfg.n_layers
    spec = effective_pathway_spec(prepared.layout, n, cross_frame=range(0, max(1, n // 3)),
                                  video_to_question=range(0, max(1, 2 * n // 3)), question_to_last=range(n // 2, n))
    random_spec = random_baseline_for(spec, prepared.layout, n, seed=0)
    knockout_probabilities(model, prepared, [spec, random_spec])


def run_patching(case: Case) -> None:
    from tl_video.interventions.patching import patch_frames

    model, clean, corrupted = case.model, case.prepared, case.corrupted
    with torch.no_grad():  # the steps of tl_video.analyses.patching.patching_record
        corrupted_logits = model(corrupted.tokens)[0, -1]  # views: each keeps its [1, n, d_vocab] alive
        clean_logits = model(clean.tokens)[0, -1]
        names = {f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)}
        _, clean_cache = model.run_with_cache(clean.tokens, names_filter=lambda name: name in names)
        with model.last_position_logits():
            patch_frames(model, clean, corrupted, clean_cache, lambda logits: logits[:, -1, 0] - logits[:, -1, 1],
                         activation="resid_pre", layers=None, progress=False, batched=True)
        del corrupted_logits, clean_logits


def run_lens(case: Case) -> None:
    from tl_video.interventions.logit_lens import option_probabilities_by_layer, video_token_top_k
    from tl_video.prompts.answers import option_token_ids

    model, prepared = case.model, case.prepared
    video_token_top_k(model, prepared)
    option_probabilities_by_layer(model, prepared, option_token_ids(model.tokenizer, prepared))


def run_attention(case: Case) -> None:
    from tl_video.analyses.attention import default_knockout_layers
    from tl_video.interventions.attention_maps import query_attention_to_video
    from tl_video.interventions.presets import cross_frame

    model, prepared = case.model, case.prepared
    (spec,) = cross_frame(prepared.layout, default_knockout_layers(model.cfg.n_layers))
    query_attention_to_video(model, prepared, "question", None)
    query_attention_to_video(model, prepared, "question", None, knockout=spec)


GENERATED = 8  # tokens generated by the open-ended case (EOS ignored, so the length is fixed)


def run_open_ended(case: Case) -> None:
    from tl_video.analyses.open_ended import probe_probabilities
    from tl_video.interventions.presets import preset
    from tl_video.model.generation import greedy_generate

    model, prepared = case.model, case.prepared
    tokens = greedy_generate(model, prepared.tokens, max_new_tokens=GENERATED, stop_at_eos=False)
    continuation = tokens[0, prepared.tokens.shape[1]:][: GENERATED // 2].tolist()
    specs = [spec for name in FLOW_PRESETS for spec in preset(name, prepared.layout, range(model.cfg.n_layers))]
    probe_probabilities(model, prepared, [], specs)  # anchor = the first answer token (the default): the sweep engine
    probe_probabilities(model, prepared, continuation, specs)  # a later anchor: the prompt reruns into a key/value cache


RUNNERS: dict[str, Callable[[Case], None]] = {
    "flow": run_flow, "pathways": run_pathways, "patching": run_patching,
    "lens": run_lens, "attention": run_attention, "open_ended": run_open_ended,
}
ESTIMATE_OPTIONS = {"open_ended": {"generated_tokens": GENERATED, "n_specs": 5}}  # the probe's cross-frame + vql-to-ql specs


def measure(case: Case, pipeline: str, debug: bool = False) -> tuple[int, PeakTensorMemory]:
    """(peak bytes of activations created during the pipeline's core computation, the tracker)."""
    model = case.model
    external = [*model.parameters(), *model.buffers(), case.prepared.tokens, case.corrupted.tokens]
    tracker = PeakTensorMemory(external, debug)
    with torch.no_grad(), tracker:
        RUNNERS[pipeline](case)
    return tracker.peak, tracker


def model_state_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers (the video bank's buffers, spare rows included)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def line(case: Case, pipeline: str, measured_activations: int) -> str:
    model = case.model
    n_tokens = case.prepared.tokens.shape[1]
    estimate = estimate_memory(
        model, pipeline, n_tokens, n_video_tokens=len(case.prepared.layout.video_positions),
        n_frames=case.prepared.layout.n_frames, dtype=model.cfg.dtype,
        n_query_tokens=len(case.prepared.layout.positions("question")),
        **({"n_specs": 5 * model.cfg.n_layers} if pipeline == "flow" else ESTIMATE_OPTIONS.get(pipeline, {})),
    )
    state = model_state_bytes(model)  # parameters (front end included) and buffers (the bank's spare rows included)
    measured = state + measured_activations
    estimated = estimate.total_bytes + estimate.host_bytes  # the measurement includes the CPU-side edge matrices
    mib = 2**20
    cfg = model.cfg
    shape = f"d{cfg.d_model}xL{cfg.n_layers}xn{n_tokens}"
    return (
        f"MEMORY {pipeline} {shape} estimated={estimated / mib:.1f}MiB measured={measured / mib:.1f}MiB "
        f"ratio={estimated / measured:.3f} activations_estimated={estimate.activation_bytes / mib:.1f}MiB "
        f"activations_measured={measured_activations / mib:.1f}MiB "
        f"activations_ratio={estimate.activation_bytes / max(measured_activations, 1):.3f} "
        f"dominant={estimate.dominant}"
    )


SHAPES = {
    "s256x4": Shape("s256x4", layers=4, d_model=256, heads=4, frames=2, image_size=336),
    "s512x8": Shape("s512x8", layers=8, d_model=512, heads=8, frames=6, image_size=336),
    "s768x12": Shape("s768x12", layers=12, d_model=768, heads=12, frames=8, image_size=336),
}


# Published configs, written out by hand (no hub access): the language model's sizes and the front end's
# parameter count (vision tower + projector; counts, not measurements). Tokens: video tokens at 8 and 16
# frames plus TEXT_TOKENS of system prompt, question, options and answer prefix.
TEXT_TOKENS = 100
QWEN2_72B = {"hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
             "intermediate_size": 29568, "vocab_size": 152064}  # the language model of both 72B models
PUBLISHED = {
    "LLaVA-NeXT-Video-7B (Vicuna-7B LM, CLIP ViT-L/14-336)": dict(
        config={"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                "intermediate_size": 11008, "vocab_size": 32064},
        frontend=300_000_000 + 21_000_000, video_tokens={8: 8 * 144, 16: 16 * 144}, frame_units={8: 8, 16: 16}),
    "Qwen2.5-VL-7B": dict(
        config={"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                "intermediate_size": 18944, "vocab_size": 152064},
        frontend=670_000_000, video_tokens={8: 4 * 256, 16: 8 * 256}, frame_units={8: 4, 16: 8}),
    "LLaVA-OneVision-72B (Qwen2-72B LM, SigLIP-so400m)": dict(
        config=QWEN2_72B,
        frontend=400_000_000 + 77_000_000, video_tokens={8: 8 * 196, 16: 16 * 196}, frame_units={8: 8, 16: 16}),
    "Qwen2.5-VL-72B": dict(
        config=QWEN2_72B,
        frontend=670_000_000, video_tokens={8: 4 * 256, 16: 8 * 256}, frame_units={8: 4, 16: 8}),
}
GPUS = {"80 GB": 79.6 * 2**30, "141 GB": 140.4 * 2**30}  # what nvidia-smi reports: 81,559 MiB (H100 80GB), 143,771 MiB (H200)


def tables() -> str:
    """Markdown tables of the estimate (bf16) for the published models, per pipeline, at 8 and 16 frames."""
    from tl_video.memory import devices_needed

    out = []
    for name, spec in PUBLISHED.items():
        out += [f"### {name}", "",
                "| pipeline | frames | tokens | total GiB | peak in | largest term after the weights | 80 GB GPUs | 141 GB GPUs | host GiB |",
                "|---|---|---|---|---|---|---|---|---|"]
        for pipeline in PIPELINES:
            for frames, video in spec["video_tokens"].items():
                n = video + TEXT_TOKENS
                options = dict(n_video_tokens=video, n_frames=spec["frame_units"][frames], frontend_parameters=spec["frontend"])
                estimate = estimate_memory(spec["config"], pipeline, n, **options)
                if pipeline == "frontend":
                    out.append(f"| frontend (parameters only) | {frames} | {n} | {estimate.frontend_bytes / 2**30:.2f} | - | - | - | - | - |")
                    break
                after = next((f"{term} {value / 2**30:.1f}" for term, value in estimate.terms), "-")
                gpus = [devices_needed(spec["config"], pipeline, n, size, **options) for size in GPUS.values()]
                out.append(
                    f"| {pipeline} | {frames} | {n} | {estimate.total_bytes / 2**30:.1f} | {estimate.phase} | {after} | "
                    + " | ".join("-" if g is None else str(g) for g in gpus) + f" | {estimate.host_bytes / 2**30:.2f} |"
                )
        weights = estimate_memory(spec["config"], "flow", 100, frontend_parameters=spec["frontend"])
        out += ["", f"Backbone weights {weights.weights_bytes / 2**30:.1f} GiB, front end {weights.frontend_bytes / 2**30:.2f} GiB (bf16).", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, from {', '.join(SHAPES)}")
    parser.add_argument("--pipelines", default=",".join(RUNNERS))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--debug", action="store_true", help="print the largest tensors alive at each peak")
    parser.add_argument("--tables", action="store_true", help="print docs/memory.md's tables for published models and stop")
    args = parser.parse_args()
    if args.tables:
        print(tables())
        return
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    print(f"# tl_video.memory estimate vs measured peak tensor memory, CPU, {args.dtype}, "
          f"vocabulary {VOCAB}; estimated/measured = weights (front end included) + video bank + activations")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.shapes.split(","):
            case = build(SHAPES[name], Path(folder), dtype)
            for pipeline in args.pipelines.split(","):
                if pipeline not in PIPELINES:
                    raise SystemExit(f"--pipelines: unknown {pipeline!r}; valid: {', '.join(PIPELINES)}")
                if pipeline not in RUNNERS:
                    continue
                peak, tracker = measure(case, pipeline, args.debug)
                print(line(case, pipeline, peak), flush=True)
                if args.debug:
                    n, d = case.prepared.tokens.shape[1], case.model.cfg.d_model
                    unit = n * d * case.model.cfg.dtype.itemsize
                    for described, nbytes in tracker.at_peak[:25]:
                        print(f"    {nbytes / unit:8.2f} x n*d  {described}")


if __name__ == "__main__":
    main()
