"""`tl-video`: a thin command-line shell over the library's pipelines.

Every failure ends in one line on stderr and a non-zero exit (2: bad input or environment,
1: an unexpected internal error, 130: interrupted); `--debug` prints the traceback instead.
`main()` is the only place that turns exceptions into that line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class CommandLineError(ValueError):
    """A bad command line (unknown option, a value that is not a number, ...)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so main() reports one line."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{message} (see `{self.prog} --help`)")


def output_folder(text: str) -> Path:
    """An argparse `type` for --out: a folder, created if needed, that can be written to."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing file, not a folder; pass a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".tl-video-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot be written ({error.strerror or error}); pass a writable folder"
        ) from None
    return path


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """`--debug` on a subcommand too (`tl-video study --debug`), without overriding the global one."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tl-video", description="Circuit analysis for Video LLMs.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from tl_video.study_cli import add_study_commands

    add_study_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure becomes one line on stderr and a non-zero exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in argv if not word.startswith("-")), "")
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # the exact command, recorded in run.json
        return args.run(args)
    except SystemExit as exit_:  # --help / --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print(f"tl-video{' ' + command if command else ''}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the one place that turns exceptions into a line
        if debug:
            raise
        expected = isinstance(error, (ValueError, TypeError, LookupError, OSError, ImportError))
        expected = expected or getattr(error, "exit_code", None) is not None  # e.g. StudyFailed: already explained
        message = " ".join(str(error).split()) or type(error).__name__
        if not expected:
            message = f"internal error ({type(error).__name__}): {message}; rerun with --debug for the traceback"
        prefix = f"tl-video {command}:" if command else "tl-video:"
        print(f"{prefix} error: {message}", file=sys.stderr)
        return getattr(error, "exit_code", None) or (EXIT_BAD_INPUT if expected else EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
