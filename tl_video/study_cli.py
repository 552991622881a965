"""The study's commands: `tl-video study` and one subcommand per pipeline, thin over `run_study`.

Options come from three places, later ones winning: built-in defaults, ``--config FILE`` (JSON or
TOML, the same option names, plus one table per analysis for that pipeline's own options), and
the command line. Every value is validated before a model is loaded; a bad one raises a
`ValueError` naming the option and the fix, which `tl_video.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tl_video.analyses.scoring import PROMPT_STYLES, SAMPLE_MODES

BUILTIN_MODEL = "tl-video/toy-temporal"
DEFAULT_SYNTHETIC_N = 8  # examples per task of the default study's synthetic benchmark: 2 min 20 s on 2 idle cores
SUBCOMMANDS = {  # command -> analysis (see tl_video.analyses.study.ANALYSES)
    "flow": "flow", "gen-prob": "gen-prob", "pathways": "pathways", "lens": "lens", "attention": "attention", "patch": "patch",
    "open-ended": "open-ended",
}
CLI_TO_FIELDS = {  # a command-line option that sets a pipeline's own option, and the field names it may have there
    "presets": ("presets",),
    "window": ("window_k", "window"),
    "window_styles": ("windows", "window_styles"),
}


def _whole(minimum: int, why: str = "") -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"expected a whole number >= {minimum}{why}, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number >= {minimum}{why}, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"expected a whole number >= {minimum}{why}, got {number}")
        return number

    return parse


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise ValueError(f"expected comma-separated names (or a list of strings), got {value!r}")
    if not items or not all(items):
        raise ValueError(f"expected comma-separated names without empty entries, got {value!r}")
    return tuple(items)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class Option:
    """One study option: its parser (for command-line text and config values alike) and help."""

    name: str  # attribute name; the command line spells it --name-with-dashes
    parse: Callable[[Any], Any]
    help: str
    metavar: str | None = None
    flag: bool = False
    study_only: bool = False
    alias: str | None = None  # a second spelling, e.g. --n-per-task, which torchrun cannot mistake for its own --nnodes


OPTIONS: tuple[Option, ...] = (
    Option("model", _text, f"hub id or checkpoint folder (default: the built-in {BUILTIN_MODEL})", "ID|DIR"),
    Option("data", _text, "examples: a .jsonl file, a TVBench or TOMATO .json file, or a TVBench/TOMATO folder "
           "(default: a synthetic benchmark generated into OUT/data)", "PATH"),
    Option("video_root", _text, "folder the videos are in (TVBench: holding one folder per task; TOMATO: holding human/, object/, simulated/)", "DIR"),
    Option("data_format", _choice("jsonl", "tvbench", "tomato"), "format of --data when detection is not wanted: jsonl, tvbench or tomato", "FORMAT"),
    Option("tasks", _names, "comma-separated tasks to analyse (default: all; TVBench: the paper's five)", "A,B"),
    Option("n", _whole(1), f"examples per task (default: all of --data; {DEFAULT_SYNTHETIC_N} for the synthetic benchmark)", "N",
           alias="n-per-task"),
    Option("seed", _whole(0), "seed of the synthetic benchmark, bootstrap intervals, permutation tests and random baselines (default: 0)", "S"),
    Option("samples", _choice(*SAMPLE_MODES), "correct (default, as in the paper): analyse the examples answered correctly at baseline; wrong: those answered wrongly; all: every example", "MODE"),
    Option("presets", _names, "information-flow presets, comma-separated (default: all four)", "P,Q"),
    Option("window", _whole(1), "knockout window size in layers (default: the paper's 9 of 32 layers, scaled to the model's depth)", "K"),
    Option("window_styles", _names, "window styles, comma-separated: center, inverse, top_down, bottom_up (default: center)", "S,T"),
    Option("prompt_style", _choice(*PROMPT_STYLES), "chat: the model's chat template (default); paper: the reference code's literal prompt", "STYLE"),
    Option("frames", _whole(2, " (the study compares frames: cross-frame flows, reversed and shuffled videos)"),
           "frames sampled per video, at least 2 (default: the model's, 8 for most)", "N"),
    Option("device", _text, "cpu, cuda, cuda:1, mps (default: cpu)", "DEVICE"),
    Option("devices", _names, "split a large model layer-wise over several devices, e.g. cuda:0,cuda:1 (instead of --device; docs/large_models.md)", "D,E"),
    Option("frontend_device", _text, "device of the vision tower and projector, e.g. cuda:2 (default: with the first layers)", "DEVICE"),
    Option("dtype", _choice("float32", "bfloat16", "float16"), "float32 (default), bfloat16 or float16", "DTYPE"),
    Option("threads", _whole(1), "CPU threads for torch (default: torch's choice; the built-in model runs fastest on 1)", "N"),
    Option("formats", _names, "figure files besides the report: html, png, pdf, svg (default: html,png)", "F,G"),
    Option("analyses", _names, "which analyses, comma-separated (default: every one but open-ended): " + ", ".join(SUBCOMMANDS), "A,B", study_only=True),
    Option("resume", _flag, "continue the run in --out: skip every record already written (same model, data and options)", flag=True),
    Option("quiet", _flag, "no progress bars or notes on stderr", flag=True),
)
OPTION_BY_NAME = {option.name: option for option in OPTIONS}


def add_study_commands(commands: argparse._SubParsersAction) -> None:
    """Add `study`, the per-pipeline subcommands and `report` to the `tl-video` parser."""
    from tl_video.cli import add_debug_option  # the parser's own module (imported lazily: it imports this one)

    study = commands.add_parser(
        "study", help="run every analysis end to end and write report.html",
        description="Run the information-flow study (flow, pathways, gen-prob, lens, attention, patch) into --out: "
        "record files, figures, run.json and report.html. With no other option it analyses the built-in model "
        "on a synthetic benchmark generated into OUT/data.",
    )
    _add_options(study, study=True)
    study.set_defaults(run=_run_command, analysis=None)
    for command, analysis in SUBCOMMANDS.items():
        parser = commands.add_parser(command, help=f"run only the {analysis} analysis (figures and report included)",
                                     description=f"Run the {analysis} analysis into --out (records, figures, run.json, report.html).")
        _add_options(parser, study=False)
        parser.set_defaults(run=_run_command, analysis=analysis)
    report = commands.add_parser("report", help="(re)write report.html of a run folder from its records",
                                 description="Rebuild report.html of a study folder from its record files and run.json.")
    report.add_argument("run_dir", help="the study's --out folder")
    add_debug_option(report)
    report.set_defaults(run=_report_command)


def _add_options(parser: argparse.ArgumentParser, *, study: bool) -> None:
    from tl_video.cli import add_debug_option

    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--config", metavar="FILE", help="a JSON or TOML file with the same options (command line wins)")
    for option in OPTIONS:
        if option.study_only and not study:
            continue
        flags = ["--" + option.name.replace("_", "-")] + ([f"--{option.alias}"] if option.alias else [])
        if option.flag:
            parser.add_argument(*flags, dest=option.name, action="store_true", default=None, help=option.help)
        else:
            parser.add_argument(*flags, dest=option.name, default=None, metavar=option.metavar, help=option.help)
    add_debug_option(parser)


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Everything a study command needs, validated: shared values and per-analysis option dicts."""

    out: Path
    values: dict[str, Any]  # option name -> parsed value (absent = default)
    analyses: tuple[str, ...]
    pipeline_options: dict[str, dict[str, Any]]
    command: str

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def settings_from_args(args: argparse.Namespace, argv: list[str] | None = None) -> Settings:
    """Merge config file and command line, validate every value, and map options onto the pipelines."""
    from tl_video.analyses.study import STUDY_ORDER, check_analyses

    config_values, config_tables = read_config(args.config) if args.config else ({}, {})
    values: dict[str, Any] = {}
    for name, raw in config_values.items():
        values[name] = _parse(name, raw, f"--config {args.config}: {name}")
    for option in OPTIONS:
        raw = getattr(args, option.name, None)
        if raw is not None:
            values[option.name] = _parse(option.name, raw, "--" + option.name.replace("_", "-"))
    if args.analysis is not None:
        if "analyses" in values:
            raise ValueError(f"analyses: `tl-video {args.command}` runs only {args.analysis}; use `tl-video study --analyses` to choose several")
        analyses = (args.analysis,)
    else:
        analyses = check_analyses(values.get("analyses", STUDY_ORDER))
    pipeline_options = {name: dict(table) for name, table in config_tables.items()}
    _map_shared_options(values, analyses, pipeline_options)
    _check_pipeline_options(values, analyses, pipeline_options)
    if values.get("video_root") is not None and values.get("data") is None:
        raise ValueError("--video-root needs --data (the synthetic benchmark keeps its videos in OUT/data)")
    if values.get("data_format") is not None and values.get("data") is None:
        raise ValueError("--data-format needs --data")
    out = _output_folder(args.out)
    command = shlex.join(["tl-video", *(sys.argv[1:] if argv is None else argv)])
    return Settings(out, values, analyses, pipeline_options, command)


def _parse(name: str, raw: Any, where: str) -> Any:
    option = OPTION_BY_NAME[name]
    try:
        return option.parse(raw)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _map_shared_options(values: dict[str, Any], analyses: tuple[str, ...], pipeline_options: dict[str, dict[str, Any]]) -> None:
    """Give --presets, --window, ... to the chosen pipelines whose options have such a field."""
    from tl_video.analyses.study import ANALYSES, option_fields

    for cli_name, candidates in CLI_TO_FIELDS.items():
        if cli_name not in values:
            continue
        takers = 0
        for name in analyses:
            try:
                fields = option_fields(ANALYSES[name].load().options_class)
            except ImportError:
                continue  # run_study reports it
            field = next((c for c in candidates if c in fields), None)
            if field is not None:
                pipeline_options.setdefault(name, {}).setdefault(field, values[cli_name])
                takers += 1
        if not takers:
            flag = "--" + cli_name.replace("_", "-")
            raise ValueError(f"{flag} does not apply to {', '.join(analyses)}; it sets the information-flow sweep (tl-video flow / study)")


def _check_pipeline_options(values: dict[str, Any], analyses: tuple[str, ...], pipeline_options: dict[str, dict[str, Any]]) -> None:
    """Build every chosen pipeline's options once, so a bad one fails before data or a model is loaded."""
    from tl_video.analyses.scoring import StudyOptions
    from tl_video.analyses.study import ANALYSES

    common = StudyOptions(num_frames=values.get("frames"), prompt_style=values.get("prompt_style", "chat"),
                          samples=values.get("samples", "correct"), seed=values.get("seed", 0))
    for name in analyses:
        try:
            pipeline = ANALYSES[name].load()
        except ImportError:
            continue  # run_study reports it
        pipeline.options(common, pipeline_options.get(name))


def read_config(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(shared options, {analysis: its own options}) from a JSON or TOML file; unknown keys are errors."""
    from tl_video.analyses.study import ANALYSES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ValueError(f"--config {path}: TOML needs Python 3.11 or later; write the same options as JSON") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"--config {path}: not valid TOML ({error})") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    else:
        raise ValueError(f"--config {path}: expected a .json or .toml file")
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: the file must hold an object of options")
    shared, tables = {}, {}
    analysis_names = {name.replace("-", "_"): name for name in ANALYSES}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in analysis_names and isinstance(value, dict):
            tables[analysis_names[name]] = value
        elif name in OPTION_BY_NAME:
            shared[name] = value
        elif name in ("out", "config"):
            raise ValueError(f"--config {path}: {key!r} is given on the command line only")
        else:
            valid = sorted(OPTION_BY_NAME) + [f"[{n}]" for n in ANALYSES]
            raise ValueError(f"--config {path}: unknown option {key!r}; valid: {', '.join(valid)}")
    return shared, tables


def _output_folder(text: str) -> Path:
    from tl_video.cli import output_folder

    try:
        return output_folder(text)
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"--out: {error}") from None


# ----------------------------------------------------------------------------- running


def _run_command(args: argparse.Namespace) -> int:
    from tl_video.analyses import distributed

    settings = settings_from_args(args, getattr(args, "argv", None))
    for name in ("device", "frontend_device"):
        _check_device(settings.get(name), "--" + name.replace("_", "-"))
    devices = settings.get("devices") or ()
    for device in devices:
        _check_device(device, "--devices")
    repeated = sorted({device for device in devices if devices.count(device) > 1})
    if repeated:
        raise ValueError(f"--devices names {', '.join(repeated)} more than once; list each device once")
    if settings.get("devices") and settings.get("device"):
        raise ValueError("--device and --devices both given: --device runs the model on one device, --devices splits it over several")
    group = distributed.init(settings.get("device"))
    if group is not None and (settings.get("devices") or settings.get("frontend_device")):
        raise ValueError(
            "--devices/--frontend-device split one model over several devices, which a torchrun data-parallel study "
            "does not do yet (each process takes cuda:LOCAL_RANK); run one process per model split without torchrun"
        )  # under torchrun: a data-parallel study (docs/distributed.md)
    try:
        return _run_settings(settings, group)
    finally:
        distributed.teardown()


def _run_settings(settings: Settings, group: Any) -> int:
    from tl_video.analyses.scoring import StudyOptions
    from tl_video.analyses.study import run_study

    if group is not None:  # each process on its own device; process 0 alone talks, renders data and writes the summary
        settings = replace(settings, values=settings.values | {"device": group.device} | ({} if group.is_main else {"quiet": True}))
    progress = not settings.get("quiet", False) and (group is None or group.is_main)
    say = (lambda line: print(line, file=sys.stderr)) if progress else (lambda line: None)
    if group is None:
        data = load_study_data(settings, progress=progress)
    else:
        data = group.from_main(lambda: load_study_data(settings, progress=progress))
    options = StudyOptions(
        num_frames=settings.get("frames"), prompt_style=settings.get("prompt_style", "chat"),
        samples=settings.get("samples", "correct"), seed=settings.get("seed", 0), dataset=data.name,
    )
    model = load_model(settings, say)
    say(f"[study] {len(data.examples)} examples ({', '.join(f'{t} {n}' for t, n in data.counts().items())}); "
        f"model {model.cfg.model_name} on {model.cfg.device}")
    run = run_study(
        model, data.examples, options, out_dir=settings.out, analyses=settings.analyses,
        pipeline_options=settings.pipeline_options, resume=bool(settings.get("resume", False)), progress=progress,
        formats=settings.get("formats", ("html", "png")), command=settings.command, log=say,
        notes={"data_source": data.source},
    )
    if group is None or group.is_main:
        print_summary(run)
    return 0


def load_study_data(settings: Settings, *, progress: bool) -> Any:
    """The examples: --data as given, else the synthetic benchmark rendered into OUT/data."""
    from tl_video.analyses.study_data import load_examples, synthetic_examples

    if settings.get("data") is None:
        return synthetic_examples(
            settings.out / "data", n_per_task=settings.get("n", DEFAULT_SYNTHETIC_N), seed=settings.get("seed", 0),
            tasks=settings.get("tasks"), progress=progress,
        )
    return load_examples(
        settings.get("data"), video_root=settings.get("video_root"), tasks=settings.get("tasks"), n=settings.get("n"),
        data_format=settings.get("data_format"),
    )


def load_model(settings: Settings, say: Callable[[str], None]) -> Any:
    import torch

    from tl_video.model.hooked_video_transformer import HookedVideoTransformer

    name = settings.get("model") or BUILTIN_MODEL
    threads = settings.get("threads")
    if threads is None and name == BUILTIN_MODEL and (settings.get("device") or "cpu") == "cpu":
        threads = 1  # a 1.3M-parameter model: threading costs more than it saves
    if threads is not None:
        torch.set_num_threads(threads)
    if settings.get("quiet", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers' own "Loading weights" bar
    devices, frontend_device = settings.get("devices"), settings.get("frontend_device")
    model = HookedVideoTransformer.from_pretrained(
        name, device=settings.get("device"), dtype=settings.get("dtype", "float32"),
        devices=list(devices) if devices else None, frontend_device=frontend_device,
    )
    model.eval()
    if not model.placement.is_single_device:
        say(f"[study] placement: {model.placement.describe()}")
    return model


def _check_device(device: str | None, flag: str = "--device") -> None:
    if device is None or device == "cpu":
        return
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{flag} {device}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{flag} mps: MPS is not available here; use --device cpu")
    if not (device.startswith("cuda") or device == "mps"):
        raise ValueError(f"{flag} {device!r}: expected cpu, cuda, cuda:N or mps")


def print_summary(run: Any) -> None:
    """What the run wrote, and its findings, on stdout."""
    print(f"wrote {run.out_dir}/ in {run.seconds:.0f} s:")
    for name, analysis in run.analyses.items():
        skipped = f", {analysis.n_skipped} examples skipped" if analysis.n_skipped else ""
        print(f"  {analysis.record_file:<30} {analysis.n_records} records ({analysis.status}, {analysis.seconds:.0f} s{skipped})")
    print(f"  {'run.json':<30} command, versions, timings")
    print(f"  {'figures/':<30} {sum(len(a.figures) for a in run.analyses.values())} figure files")
    print(f"  {'report.html':<30} open in a browser (works offline)")
    findings = [(name, finding) for name, result in run.results.items() for finding in _safe_findings(result)]
    shown = [(name, f) for name, f in findings if f.p_value is None or not f.p_value >= 0.05]
    if shown:
        print("findings:")
        for name, finding in shown:
            print(f"  [{name}] {finding}")
    if len(findings) > len(shown):
        print(f"  ({len(findings) - len(shown)} more without a significant effect, p >= 0.05: see report.html)")


def _safe_findings(result: Any) -> list[Any]:
    try:
        return list(result.findings())
    except Exception:  # noqa: BLE001 - the report says why; the summary just omits them
        return []


def _report_command(args: argparse.Namespace) -> int:
    from tl_video.report import write_report

    path = write_report(args.run_dir)
    print(f"wrote {path}")
    return 0

