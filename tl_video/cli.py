"""`tl-video`: a thin command-line shell over the library's pipelines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from tl_video.demo import run_demo

    result = run_demo(args.model, Path(args.out), n_frames=args.frames)
    print(f"model: {result.model}{'  (untrained, random weights)' if result.model_is_random else ''}")
    print(f"input: {result.n_tokens} tokens, {result.n_video_tokens} video tokens in {result.n_frames} frames")
    print("top next tokens:", ", ".join(f"{token!r} {p:.3f}" for token, p in result.top_next_tokens))
    print(f"clean - reversed logit of the top answer: {result.clean_minus_reversed_logit:+.4f}")
    print("resid_pre patching (reversed <- clean), mean metric per layer x frame:")
    for layer, row in enumerate(result.patch_recovery_by_layer_and_frame):
        print(f"  L{layer + 1:<3}" + " ".join(f"{value:+.3f}" for value in row))
    print(f"results written to {Path(args.out) / 'demo_result.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tl-video", description="Circuit analysis for Video LLMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="load a model, prepare a real mp4, cache activations and patch clean vs reversed video",
        description="End-to-end demo on one synthetic video; writes demo_result.json to --out.",
    )
    demo.add_argument("--model", default=None, help="hub id or checkpoint folder (default: the built-in tl-video/toy-temporal when installed, else an untrained tiny LLaVA-NeXT-Video)")
    demo.add_argument("--out", default="tl_video_demo", help="output folder (default: ./tl_video_demo)")
    demo.add_argument("--frames", type=int, default=8, help="frames sampled from the video (default: 8)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"tl-video {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
