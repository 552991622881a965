"""Time our plain forward against the HF model's language-model forward, in one process.

Both run the same prepared input (the HF side gets the identical `inputs_embeds`, so the vision
tower is excluded on both sides). Prints seconds per forward and ratios to HF eager.

    python benchmarks/forward_speed.py            # tiny and medium (12 layers, d_model 512, 8 frames)
    python benchmarks/forward_speed.py --sizes medium --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import tl_video
from tl_video.testing import save_tiny_llava_next_video

SIZES = {
    "tiny": dict(frames=4, options=dict()),
    "medium": dict(
        frames=8,
        options=dict(
            num_hidden_layers=12, hidden_size=512, num_attention_heads=8, intermediate_size=1376,
            image_size=336, patch_size=14,
        ),
    ),
}


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def run(size: str, repeats: int) -> None:
    spec = SIZES[size]
    with tempfile.TemporaryDirectory() as folder:
        save_tiny_llava_next_video(Path(folder), **spec["options"])
        model = tl_video.HookedVideoTransformer.from_pretrained(folder, keep_hf_model=True)
        hf = model.hf_model[0]
        frames = np.random.RandomState(0).randint(0, 256, (spec["frames"], 360, 480, 3), dtype=np.uint8)
        prepared = model.prepare(video=frames, prompt="What is the order of events in the video?")
        tokens = prepared.tokens
        embeds = model.embed_tokens(tokens)
        language_model = hf.model.language_model

        def hf_forward(implementation: str):
            hf.set_attn_implementation(implementation)
            return lambda: hf.lm_head(language_model(inputs_embeds=embeds, use_cache=False).last_hidden_state)

        def ours(implementation: str):
            def call():
                model.cfg.attn_implementation = implementation
                return model(tokens)
            return call

        results = {
            "HF eager": seconds(hf_forward("eager"), repeats),
            "HF sdpa": seconds(hf_forward("sdpa"), repeats),
            "ours (auto: fused, no pattern hook)": seconds(ours("auto"), repeats),
            "ours (eager)": seconds(ours("eager"), repeats),
            "ours run_with_cache (all hooks)": seconds(lambda: model.run_with_cache(tokens), repeats),
        }
        model.cfg.attn_implementation = "auto"
        baseline = results["HF eager"]
        print(f"\n{size}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, {tokens.shape[1]} tokens "
              f"({len(prepared.layout.video_positions)} video), {torch.get_num_threads()} threads")
        for name, value in results.items():
            print(f"  {name:<38} {value * 1000:9.1f} ms   x{value / baseline:5.2f} of HF eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    args = parser.parse_args()
    for size in args.sizes:
        run(size, args.repeats)


if __name__ == "__main__":
    main()
