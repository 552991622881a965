"""The demo job: load a VideoLLM, prepare a real video file, cache, patch clean vs reversed.

It exercises the whole stack a researcher touches first: mp4 written and decoded (decord),
`prepare`, `run_with_cache`, TransformerLens's own `patching` on clean vs corrupted *videos*,
with results summarised per frame through the token layout and written as JSON.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformer_lens import patching

from tl_video.model.hooked_video_transformer import HookedVideoTransformer
from tl_video.video import read_video, write_video

DEMO_PROMPT = "Which direction does the square move? Answer left or right."


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    model: str
    model_is_random: bool  # true when the demo built an untrained tiny checkpoint
    video: str
    n_tokens: int
    n_video_tokens: int
    n_frames: int
    top_next_tokens: list[tuple[str, float]]  # (token, probability) at the last position
    clean_minus_reversed_logit: float  # metric on the clean run, relative to the reversed run
    patch_recovery_by_layer_and_frame: list[list[float]]  # [layer][frame]: mean patched metric


def moving_square_video(n_frames: int = 8, size: int = 64, direction: int = 1) -> np.ndarray:
    """A white square crossing a dark background left->right (direction=1) or right->left."""
    frames = np.full((n_frames, size, size, 3), 30, dtype=np.uint8)
    side = size // 4
    for index in range(n_frames):
        progress = index / max(n_frames - 1, 1)
        left = int((progress if direction > 0 else 1 - progress) * (size - side))
        frames[index, size // 2 - side // 2 : size // 2 + side // 2, left : left + side] = 230
    return frames


def run_demo(model_name: str | None, out: Path, n_frames: int = 8) -> DemoResult:
    """Run the demo into folder `out`; `n_frames` >= 2, since clean and reversed must differ."""
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
        raise ValueError(
            f"n_frames={n_frames!r}: the demo patches the clean video into its reversed copy, which needs "
            "at least 2 frames (with 1 frame both are the same video and every number is 0)"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"the output path {out} is an existing file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    from tl_video.loading.checkpoint import BUILTIN_MODELS

    builtin = "tl-video/toy-temporal"
    if model_name is None and (BUILTIN_MODELS[builtin] / "config.json").is_file():
        model_name = builtin
    is_random = model_name is None
    if model_name is None:
        from tl_video.testing import save_tiny_llava_next_video

        model_name = str(save_tiny_llava_next_video(out / "tiny-random-llava-next-video"))
        print(f"[demo] no model given: built an untrained tiny LLaVA-NeXT-Video at {model_name}", file=sys.stderr)
    model = HookedVideoTransformer.from_pretrained(model_name)
    video_path = write_video(out / "moving_square.mp4", moving_square_video(n_frames), fps=8)
    frames = read_video(video_path, num_frames=n_frames).frames
    clean = model.prepare(video=frames, prompt=DEMO_PROMPT)
    reversed_ = model.prepare(video=frames[::-1].copy(), prompt=DEMO_PROMPT)
    clean.layout.check_same_as(reversed_.layout)
    print(clean.layout, file=sys.stderr)

    with torch.no_grad():
        logits, cache = model.run_with_cache(clean.tokens)
    probabilities = logits[0, -1].softmax(-1)
    top = probabilities.topk(5)
    answer = int(top.indices[0])
    top_tokens = [(model.to_string([int(i)]), round(float(p), 4)) for p, i in zip(top.values, top.indices)]
    metric = lambda patched_logits: patched_logits[0, -1, answer]  # noqa: E731
    with torch.no_grad():
        reversed_logit = float(metric(model(reversed_.tokens)))
        by_position = patching.get_act_patch_resid_pre(model, reversed_.tokens, cache, metric)
    per_frame = [
        [float(by_position[layer, clean.layout.positions(f"frame[{frame}]")].mean()) for frame in range(clean.layout.n_frames)]
        for layer in range(model.cfg.n_layers)
    ]
    result = DemoResult(
        model=model_name,
        model_is_random=is_random,
        video=str(video_path),
        n_tokens=clean.layout.n_tokens,
        n_video_tokens=len(clean.layout.video_positions),
        n_frames=clean.layout.n_frames,
        top_next_tokens=top_tokens,
        clean_minus_reversed_logit=float(metric(logits)) - reversed_logit,
        patch_recovery_by_layer_and_frame=per_frame,
    )
    (out / "demo_result.json").write_text(json.dumps(asdict(result), indent=2))
    return result
