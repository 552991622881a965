"""Video bank memory and registration time over a long run, with and without `video_bank.scope()`.

Registers N videos of T tokens (random projected tokens, d_model D, float32) the way a study does:
one video per example. Prints the bank's bytes at the end and the registration time, unscoped
(every video kept, as a run that never frees would) and scoped (each example's video freed when the
next starts, as the study pipelines do).

    python benchmarks/bank_memory.py [--videos 500] [--tokens 1152] [--d-model 512]
"""

from __future__ import annotations

import argparse
import time

import torch

from tl_video.model.video_bank import VideoBank


def run(videos: int, tokens: int, d_model: int, scoped: bool) -> tuple[float, int, int]:
    """(seconds registering, bank bytes at the end, largest bank bytes seen)."""
    bank = VideoBank(d_vocab=1000, d_model=d_model, dtype=torch.float32)
    grid = torch.zeros(tokens, 3, dtype=torch.long)
    embeddings = torch.randn(tokens, d_model)
    largest, seconds = 0, 0.0
    for _ in range(videos):
        scope = bank.scope() if scoped else None
        if scope is not None:
            scope.__enter__()
        start = time.perf_counter()
        bank.register(embeddings, grid)
        seconds += time.perf_counter() - start
        largest = max(largest, bank.nbytes)
        if scope is not None:
            scope.__exit__(None, None, None)
    return seconds, bank.nbytes, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=1152)
    parser.add_argument("--d-model", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)  # registration is memory-bound; extra threads only add contention
    video_mb = args.tokens * args.d_model * 4 / 2**20
    print(f"{args.videos} videos x {args.tokens} tokens x d_model {args.d_model} float32 ({video_mb:.1f} MiB per video)")
    for scoped in (False, True):
        seconds, end, largest = run(args.videos, args.tokens, args.d_model, scoped)
        label = "scoped (study pipelines)" if scoped else "unscoped (every video kept)"
        print(f"{label:30s} register {seconds:7.2f} s   bank at end {end / 2**20:9.1f} MiB   largest {largest / 2**20:9.1f} MiB")


if __name__ == "__main__":
    main()
