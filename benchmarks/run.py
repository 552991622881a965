"""tl_video's speed and memory against the reference method on the HF model, measured in one process.

    python benchmarks/run.py                      # medium shape (12 layers, d_model 512, 8 x 144 video tokens)
    python benchmarks/run.py --quick              # a smaller shape, for development
    python benchmarks/run.py --only plain-forward-vs-hf-sdpa --only vql-to-ql-sweep-vs-reference
    python benchmarks/run.py --device cuda --dtype bfloat16

A random LLaVA-NeXT-Video checkpoint is written and loaded through the public path (our model and
the HF model it came from, same weights). Each result is one line
`BENCH <name> measured=<number> target=<op><number> PASS|FAIL`; INFO, CHECK and WORK lines give
the seconds, the agreement with the reference, and each sweep's work against the minimum.
Timings are medians of interleaved repeats after a warm-up. Peak memory runs each case in its own
subprocess (peak RSS on CPU, torch.cuda.max_memory_allocated on GPU), counted from after setup.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `tl_video` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import attribution, memory
from benchmarks.cases import CASES, Bench
from benchmarks.reference import ReferenceKnockout
from benchmarks.shapes import SHAPES, load, prepare, save_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MEMORY_CASE = "sweep-peak-memory-vs-cached-forward"
ATTRIBUTION_CASE = "attribution-vs-exact"
ALL_CASES = [*CASES, MEMORY_CASE, ATTRIBUTION_CASE]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the smaller 'quick' shape (6 layers, 4 frames)")
    parser.add_argument("--shape", choices=list(SHAPES), default=None, help="shape by name (overrides --quick)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--only", action="append", choices=ALL_CASES, default=None,
                        help="run only this case (repeatable)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--memory-child", choices=list(memory.CHILD_CASES), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def shape_of(args: argparse.Namespace):
    return SHAPES[args.shape or ("quick" if args.quick else "medium")]


def emit(line: str) -> None:
    print(line, flush=True)


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    shape, dtype = shape_of(args), DTYPES[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory.child(args.memory_child, args.checkpoint, shape, dtype, args.device)
        return
    wanted = args.only or ALL_CASES
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = save_checkpoint(shape, Path(folder) / "checkpoint")
        model = load(checkpoint, dtype, args.device, keep_hf_model=True)
        prepared = prepare(model, shape)
        reference = ReferenceKnockout(model.hf_model[0], model.embed_tokens(prepared.tokens.to(args.device)))
        bench = Bench(model, reference, prepared, shape, args.device, args.repeats)
        layout = prepared.layout
        emit(f"SETUP shape={shape.name} layers={model.cfg.n_layers} d_model={model.cfg.d_model} "
             f"tokens={prepared.tokens.shape[1]} video_tokens={len(layout.video_positions)} frames={shape.frames} "
             f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} repeats={args.repeats}")
        for name in wanted:
            if name in CASES:
                for line in CASES[name](bench):
                    emit(line)
            elif name == MEMORY_CASE:
                for line in memory.compare(checkpoint, args, Path(__file__).resolve()):
                    emit(line)
            elif name == ATTRIBUTION_CASE:
                for line in attribution.lines(bench):
                    emit(line)
    emit(f"DONE seconds={time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
