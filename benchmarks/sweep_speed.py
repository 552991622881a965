"""Time a vql-to-ql knockout sweep: plain full forwards vs the exact sweep engine, in one process.

A random LLaVA-NeXT-Video-shaped checkpoint (saved and loaded through the public path) runs the
four vql-to-ql flows at every centre layer with the study's default window; both engines return
the same probabilities (the largest difference is printed). Prints the shape used, seconds per
sweep for each engine (plain full forwards; the exact engine, the default; its batched variant),
fastest of interleaved repeats, and the ratios plain / engine.

    python benchmarks/sweep_speed.py                  # medium: 12 layers, d_model 512, 8 frames x 144 video tokens
    python benchmarks/sweep_speed.py --layers 6 --frames 4   # smaller, for a busy machine
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import tl_video
from tl_video.analyses.flow import default_window_k
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.interventions.presets import preset
from tl_video.interventions.windows import window_layers
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_llava_next_video


ENGINES = ("plain", "exact", "batched")


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each engine (fastest kept)")
    parser.add_argument("--window", type=int, default=None, help="window size k (default: the study's, round(9/32 n))")
    args = parser.parse_args()
    options = dict(
        num_hidden_layers=args.layers, hidden_size=args.d_model, num_attention_heads=8,
        intermediate_size=args.d_model * 43 // 16, image_size=336, patch_size=14,
    )
    with tempfile.TemporaryDirectory() as folder:
        save_tiny_llava_next_video(Path(folder), **options)
        model = tl_video.HookedVideoTransformer.from_pretrained(folder)
        frames = np.random.RandomState(0).randint(0, 256, (args.frames, 360, 480, 3), dtype=np.uint8)
        question = multiple_choice_prompt("What happens first in the video?", ["a cat jumps", "a door opens", "it rains", "a car stops"], answer_index=1)
        prepared = model.prepare(video=frames, prompt=question, answer_prefix="Best option:(")
        n_layers = model.cfg.n_layers
        k = args.window or default_window_k(n_layers)
        specs = [spec for centre in range(n_layers)
                 for spec in preset("vql-to-ql", prepared.layout, window_layers(centre, n_layers, k, "center"))]
        print(f"shape: {n_layers} layers, d_model {model.cfg.d_model}, {prepared.tokens.shape[1]} tokens "
              f"({len(prepared.layout.video_positions)} video, {args.frames} frames), vql-to-ql sweep k={k}: "
              f"{len(specs)} configurations, {torch.get_num_threads()} threads")
        model(prepared.tokens[:, :64])  # warm-up
        times: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        outputs = {}
        for _ in range(args.repeats):  # interleaved, fastest kept: robust to other load on a shared machine
            for engine in ENGINES:
                seconds, outputs[engine] = timed(lambda: knockout_probabilities(model, prepared, specs, engine=engine))
                times[engine].append(seconds)
        plain_s = min(times["plain"])
        for engine in ENGINES:
            best = min(times[engine])
            print(f"{engine:>8}: {best:7.2f} s per sweep ({best / len(specs) * 1000:6.0f} ms per configuration), "
                  f"max |plain - {engine}| = {float((outputs['plain'] - outputs[engine]).abs().max()):.1e}")
        for engine in ENGINES[1:]:
            print(f"ratio plain/{engine}: {plain_s / min(times[engine]):.1f}x")


if __name__ == "__main__":
    main()
