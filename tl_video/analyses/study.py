"""The whole study in one run folder: every pipeline in order, then figures, `run.json` and `report.html`.

Order: information flow first (its curves give the effective-pathway ranges), then effective
pathways, generation probability, logit lens, attention maps and activation patching. Each
pipeline writes its own record file (``<analysis>.jsonl``) while it runs, so an interrupted study
resumes (``resume=True``) where it stopped. All options are built and validated before anything
runs. A pipeline that fails is recorded in ``run.json`` and the report, the others still run, and
`StudyFailed` is raised at the end naming it.

    >>> run = run_study(model, examples, StudyOptions(), out_dir="study")   # doctest: +SKIP
    >>> run.report                                                          # doctest: +SKIP
    PosixPath('study/report.html')
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from tl_video.analyses.records import RecordWriteError
from tl_video.analyses.scoring import StudyOptions, not_finite_runs, skipped_examples
from tl_video.data.examples import VideoQAExample, check_unique_ids

RUN_FILE = "run.json"
FIGURE_FOLDER = "figures"
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class Analysis:
    """One pipeline of the study: where its code and figures live, and how the report names it."""

    name: str  # command-line name: `tl-video <name>`, `--analyses <name>,...`
    module: str
    plots: str
    title: str
    about: str  # one sentence for the report

    def load(self) -> "Pipeline":
        """Import the pipeline and find its parts by the shape every analysis module shares."""
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as error:
            if error.name == self.module:
                raise ImportError(f"analysis {self.name!r}: module {self.module} is not installed in this version") from None
            raise
        runs = [value for key, value in vars(module).items() if key.startswith("run_") and inspect.isfunction(value)
                and value.__module__ == module.__name__]
        if len(runs) != 1:
            raise ImportError(f"analysis {self.name!r}: {self.module} must define exactly one run_<name> function")
        run = runs[0]
        options_class = type(inspect.signature(run).parameters["options"].default)
        result_class = _resolve(module, inspect.signature(run).return_annotation)
        return Pipeline(self, module.ANALYSIS, run, options_class, result_class)


@dataclass(frozen=True)
class Pipeline:
    """A loaded analysis: its record-file name, run function, options class and result class."""

    analysis: Analysis
    record_name: str  # <out_dir>/<record_name>.jsonl
    run: Callable[..., Any]
    options_class: type
    result_class: type

    def options(self, common: StudyOptions, specific: Mapping[str, Any] | StudyOptions | None = None) -> StudyOptions:
        """This pipeline's options: the shared ones from ``common``, its own from ``specific`` (a dict or options)."""
        if isinstance(specific, StudyOptions):
            if not isinstance(specific, self.options_class):
                raise TypeError(f"options for {self.analysis.name!r} must be {self.options_class.__name__}, got {type(specific).__name__}")
            return specific
        fields = option_fields(self.options_class)
        given = dict(specific or {})
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ValueError(
                f"{self.analysis.name}: unknown option {unknown[0]!r}; {self.analysis.name} options are: {', '.join(sorted(fields))}"
            )
        shared = {name: getattr(common, name) for name in option_fields(StudyOptions)}
        values = {name: _coerce(fields[name], value) for name, value in given.items()}
        return self.options_class(**(shared | values))

    def figures(self, result: Any) -> dict[str, Any]:
        return importlib.import_module(self.analysis.plots).figures(result)

    def read(self, out_dir: str | Path) -> Any:
        return self.result_class.read(out_dir)


ANALYSES: dict[str, Analysis] = {
    analysis.name: analysis
    for analysis in (
        Analysis("flow", "tl_video.analyses.flow", "tl_video.plots.flow", "Information flow",
                 "Attention edges between token groups are blocked in a window of layers; the curves show how the "
                 "probability of the answer changes, per layer, relative to the unblocked run."),
        Analysis("pathways", "tl_video.analyses.pathways", "tl_video.plots.pathways", "Effective pathways",
                 "One forward pass keeps only the flows in the layer ranges that matter and blocks every other "
                 "attention edge; accuracy is compared with full attention and with random blocking of as many edges."),
        Analysis("gen-prob", "tl_video.analyses.generation_probability", "tl_video.plots.generation_probability",
                 "Generation probability by layer",
                 "The probability of each option letter read out from the residual stream at the answer position after every layer."),
        Analysis("lens", "tl_video.analyses.lens", "tl_video.plots.lens", "Logit lens on video tokens",
                 "Each video token's residual projected onto the vocabulary, by layer: which words the video tokens come to mean."),
        Analysis("attention", "tl_video.analyses.attention", "tl_video.plots.attention", "Attention maps",
                 "Attention from the question to the video, per layer and frame, at baseline and under a knockout."),
        Analysis("patch", "tl_video.analyses.patching", "tl_video.plots.patching", "Activation patching",
                 "The clean video's residual patched into the run on a corrupted video, by layer and frame, as "
                 "normalised recovery (0 = corrupted, 1 = clean)."),
        Analysis("open-ended", "tl_video.analyses.open_ended", "tl_video.plots.flow", "Information flow, open-ended",
                 "The model answers in its own words; flows are blocked while the first token of an anchor word of that "
                 "answer is predicted, and the curves show how its probability changes."),
    )
}
ALL_ANALYSES: tuple[str, ...] = tuple(ANALYSES)  # in the order a study runs them
STUDY_ORDER: tuple[str, ...] = ("flow", "pathways", "gen-prob", "lens", "attention", "patch")  # the default study


def option_fields(options_class: type) -> dict[str, dataclasses.Field]:
    """The dataclass fields of an options class, by name."""
    return {f.name: f for f in dataclasses.fields(options_class)}


def check_analyses(names: Iterable[str]) -> tuple[str, ...]:
    """Validate analysis names and return them in study order (flow before pathways, ...)."""
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in ANALYSES]
    if unknown or not names:
        raise ValueError(f"analyses {unknown or names!r}: choose from {', '.join(ALL_ANALYSES)}")
    return tuple(name for name in ALL_ANALYSES if name in names)


@dataclass
class AnalysisRun:
    """What happened to one analysis in a study run (kept in run.json)."""

    name: str
    record_file: str
    seconds: float = 0.0
    figure_seconds: float = 0.0
    status: str = "pending"  # pending | done | failed | skipped
    error: str | None = None
    n_records: int = 0
    n_resumed: int = 0
    n_skipped: int = 0  # examples that could not be analysed (skipped records, each with its reason)
    n_not_finite: int = 0  # runs inside analysed examples whose numbers were not finite (skipped, with the reason)
    figures: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    command: str = ""  # the command that ran it (a folder may hold analyses of several commands)


@dataclass
class StudyRun:
    """The outcome of `run_study`: the run folder, per-analysis results and the report's path."""

    out_dir: Path
    analyses: dict[str, AnalysisRun]
    results: dict[str, Any]
    report: Path | None
    seconds: float

    @property
    def failed(self) -> list[str]:
        return [name for name, run in self.analyses.items() if run.status == "failed"]


class StudyFailed(RuntimeError):
    """Some analyses of a study failed; the others' records, figures and the report were written."""

    exit_code = 1  # the command line prints the message as its one error line


def run_study(
    model: Any,
    examples: Sequence[VideoQAExample],
    options: StudyOptions = StudyOptions(),
    *,
    out_dir: str | Path,
    analyses: Iterable[str] = STUDY_ORDER,
    pipeline_options: Mapping[str, Mapping[str, Any] | StudyOptions] | None = None,
    resume: bool = False,
    progress: bool = True,
    formats: Sequence[str] = ("html", "png"),
    command: str | None = None,
    notes: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> StudyRun:
    """Run ``analyses`` (default: all, in study order) on ``examples`` into ``out_dir`` and write the report.

    ``options`` holds what every pipeline shares (frames, prompt style, samples, seed, dataset name);
    ``pipeline_options`` maps an analysis name to its own options (a dict of fields, or the options
    object itself). ``formats``: figure files to write besides the report ("html", "png", "pdf", "svg").
    ``command``: the exact command line to record (default: this process's argv).
    ``log``: where one-line notes go (default: stderr when ``progress``).
    """
    started = time.time()
    say = log or ((lambda line: print(line, file=sys.stderr)) if progress else (lambda line: None))
    names = check_analyses(analyses)
    check_unique_ids(examples)  # records are keyed by example id: a repeat would be lost
    extra = dict(pipeline_options or {})
    stray = [name for name in extra if name not in ANALYSES]
    if stray:
        raise ValueError(f"pipeline_options for unknown analysis {stray[0]!r}; analyses: {', '.join(ALL_ANALYSES)}")
    formats = _check_formats(formats)
    pipelines, broken = {}, {}
    for name in names:
        try:
            pipelines[name] = ANALYSES[name].load()
        except ImportError as error:  # one broken pipeline must not stop the others
            broken[name] = _one_line(error)
    prepared = {name: pipeline.options(options, extra.get(name)) for name, pipeline in pipelines.items()}  # validate first
    out_dir = Path(out_dir)
    if not resume:
        taken = [f"{p.record_name}.jsonl" for p in pipelines.values() if _has_records(out_dir / f"{p.record_name}.jsonl")]
        if taken:
            raise FileExistsError(
                f"{out_dir / taken[0]} already holds results; pass --resume (resume=True) to continue that run, "
                "or choose another output folder"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    info = run_info(model, examples, options, command=command, notes=notes, resume=resume)
    runs = {
        name: AnalysisRun(name, f"{pipelines[name].record_name}.jsonl", options=prepared[name].to_json(), command=info["command"])
        if name in pipelines else AnalysisRun(name, "", status="failed", error=broken[name], command=info["command"])
        for name in names
    }
    for name, error in broken.items():
        say(f"[study] {name} cannot run: {error}")
    info["earlier"] = _earlier_analyses(out_dir, names)
    write_run_json(out_dir, info, runs, started)

    results: dict[str, Any] = {}
    for name in pipelines:
        pipeline, run = pipelines[name], runs[name]
        begin = time.time()
        run.n_resumed = _records_on_disk(out_dir / run.record_file) if resume else 0
        try:
            kwargs = _pipeline_inputs(pipeline, results, out_dir)
            result = _run_pipeline(pipeline, model, examples, prepared[name], run, out_dir=out_dir, resume=resume, progress=progress, **kwargs)
        except (KeyboardInterrupt, MemoryError, RecordWriteError) as error:  # a full disk stops the study: nothing more can be kept
            run.status, run.seconds = "interrupted", time.time() - begin
            run.error = _one_line(error) if isinstance(error, RecordWriteError) else None
            try:
                write_run_json(out_dir, info, runs, started)
            except OSError:
                pass  # the disk that refused the records may refuse run.json too; the error below names the file
            raise
        except Exception as error:  # noqa: BLE001 - recorded, the other analyses still run
            run.status, run.error, run.seconds = "failed", _one_line(error), time.time() - begin
            say(f"[study] {name} failed: {run.error}")
            write_run_json(out_dir, info, runs, started)
            continue
        run.seconds = time.time() - begin
        run.status, run.n_records = "done", len(result.records)
        run.n_skipped = len(skipped_examples(result.records))
        run.n_not_finite = len(not_finite_runs(result.records))
        results[name] = result
        problems = [f"{run.n_skipped} examples skipped"] * bool(run.n_skipped) + [
            f"{run.n_not_finite} runs not finite"] * bool(run.n_not_finite)
        skips = f" ({', '.join(problems)}: see the report)" if problems else ""
        say(f"[study] {name}: {len(result.records)} records in {run.seconds:.1f} s{skips}")
        write_run_json(out_dir, info, runs, started)

    main = _is_main_process()  # a data-parallel study draws and reports in process 0 only
    drawn = export_figures(out_dir, {name: (pipelines[name], results[name]) for name in results}, runs, formats, say, progress) if main else {}
    write_run_json(out_dir, info, runs, started, finished=True)
    from tl_video.report import write_report

    report = write_report(out_dir, figures=drawn) if main else None
    if main:
        say(f"[study] report: {report}")
    study = StudyRun(out_dir, runs, results, report, time.time() - started)
    write_run_json(out_dir, info, runs, started, finished=True)
    if study.failed:
        details = "; ".join(f"{name}: {runs[name].error}" for name in study.failed)
        raise StudyFailed(f"{len(study.failed)} of {len(names)} analyses failed ({details}); the rest is in {report}")
    return study


def _run_pipeline(pipeline: Pipeline, model: Any, examples: Sequence[VideoQAExample], options: StudyOptions,
                  run: AnalysisRun, **kwargs: Any) -> Any:
    """One pipeline on every example, or, in a data-parallel study, on this process's shard, merged after."""
    from tl_video.analyses import distributed

    group = distributed.current()
    if group is None:
        return pipeline.run(model, examples, options, **kwargs)
    result, run.n_resumed = distributed.run_pipeline(group, pipeline, model, examples, options, **kwargs)
    return result


def _is_main_process() -> bool:
    from tl_video.analyses.distributed import current

    group = current()
    return group is None or group.is_main


def _distributed_info() -> dict[str, Any]:
    from tl_video.analyses.distributed import current

    group = current()
    return {} if group is None else {"distributed": group.describe()}


def _pipeline_inputs(pipeline: Pipeline, results: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Results of earlier analyses that a pipeline takes (pathways: the flow result, for its ranges).

    The flow result of this run, or else one already in ``out_dir`` (`tl-video pathways` after `tl-video flow`).
    """
    parameters = inspect.signature(pipeline.run).parameters
    if "flow_result" not in parameters:
        return {}
    if "flow" in results:
        return {"flow_result": results["flow"]}
    flow = ANALYSES["flow"].load()
    if (out_dir / f"{flow.record_name}.jsonl").is_file():
        return {"flow_result": flow.read(out_dir)}
    return {}


def export_figures(
    out_dir: Path, done: Mapping[str, tuple[Pipeline, Any]], runs: Mapping[str, AnalysisRun],
    formats: Sequence[str], say: Callable[[str], None], progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Write every figure of every finished analysis to ``out_dir/figures`` (HTML always; static when possible).

    Returns the figures by analysis, so the report need not draw them again.
    """
    from tl_video.plots.style import static_export_available

    folder = out_dir / FIGURE_FOLDER
    folder.mkdir(exist_ok=True)
    static = [fmt for fmt in formats if fmt != "html"]
    problem = static_export_available() if static else None
    if problem:
        say(f"[study] figures: HTML only; {problem}")
        static = []
    drawn: dict[str, dict[str, Any]] = {}
    pending: list[tuple[Any, Path, str]] = []
    for name, (pipeline, result) in done.items():
        begin = time.time()
        try:
            figures = pipeline.figures(result)
        except Exception as error:  # noqa: BLE001 - a figure bug must not lose the records
            runs[name].error = f"figures: {_one_line(error)}"
            say(f"[study] {name} figures failed: {runs[name].error}")
            continue
        drawn[name] = figures
        if "html" in formats:
            for stem, figure in figures.items():
                path = folder / f"{stem}.html"
                figure.write_html(path, include_plotlyjs="directory", full_html=True)
                runs[name].figures.append(path.relative_to(out_dir).as_posix())
        pending.extend((figure, folder / f"{stem}.{fmt}", name) for stem, figure in figures.items() for fmt in static)
        runs[name].figure_seconds = time.time() - begin
    if pending:
        _write_static(pending, runs, out_dir, say, progress)
    return drawn


def _write_static(
    pending: list[tuple[Any, Path, str]], runs: Mapping[str, AnalysisRun], out_dir: Path,
    say: Callable[[str], None], progress: bool,
) -> None:
    """PNG/PDF/SVG through kaleido, one browser for all figures; a failure leaves the HTML figures."""
    import logging
    import warnings

    import kaleido
    from tqdm.auto import tqdm

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # the browser driver logs tracebacks of messages it then ignores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # plotly warns that kaleido options are ignored with a running server
        try:
            kaleido.start_sync_server(silence_warnings=True)
            try:
                for figure, path, name in tqdm(pending, desc="figure files", unit="figure", disable=not progress, leave=False):
                    begin = time.time()
                    figure.write_image(path, scale=2 if path.suffix == ".png" else 1)
                    runs[name].figures.append(path.relative_to(out_dir).as_posix())
                    runs[name].figure_seconds += time.time() - begin
            finally:
                kaleido.stop_sync_server(silence_warnings=True)
        except Exception as error:  # noqa: BLE001 - static export depends on a browser; HTML is already there
            say(f"[study] figures: static export failed ({_one_line(error)}); the HTML figures were written")
        finally:
            logging.disable(previous)


def _placement_info(model: Any) -> dict[str, Any]:
    """A model split over devices records where each part ran (docs/large_models.md)."""
    placement = getattr(model, "placement", None)
    if placement is None or placement.is_single_device:
        return {}
    return {"placement": placement.to_json()}


def run_info(
    model: Any, examples: Sequence[VideoQAExample], options: StudyOptions, *, command: str | None = None,
    notes: Mapping[str, Any] | None = None, resume: bool = False,
) -> dict[str, Any]:
    """What run.json says about the run: the command, versions, model, device, dtype and data."""
    cfg = model.cfg
    tasks: dict[str, int] = {}
    for example in examples:
        tasks[example.task or "all"] = tasks.get(example.task or "all", 0) + 1
    return {
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed": resume,
        "model": {"id": cfg.model_name, "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
                  "device": str(cfg.device), "dtype": str(cfg.dtype).replace("torch.", ""),
                  **_placement_info(model)},
        "data": {"name": options.dataset, "n_examples": len(examples), "per_task": tasks},
        "options": options.to_json(),
        "versions": versions(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_threads": _threads()},
        **({"notes": dict(notes)} if notes else {}),
        **_distributed_info(),
    }


def versions() -> dict[str, str]:
    """Versions of tl_video and the libraries its numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("tl_video", "torch", "transformers", "transformer-lens", "numpy", "scipy", "plotly", "kaleido"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _records_on_disk(path: Path) -> int:
    """How many records a file already holds (those a resumed run keeps)."""
    if not _has_records(path):
        return 0
    from tl_video.analyses.records import read_records

    try:
        return len(read_records(path, drop_torn_tail=True)[1])
    except ValueError:  # not a record file, or torn inside: the pipeline reports it
        return 0


def _has_records(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _earlier_analyses(out_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    """run.json entries of analyses an earlier command wrote into this folder (kept when another analysis runs)."""
    try:
        earlier = read_run_info(out_dir).get("analyses", {})
    except (FileNotFoundError, ValueError):
        return {}
    return {
        name: entry for name, entry in earlier.items()
        if name not in names and name in ANALYSES and entry.get("record_file") and _has_records(out_dir / entry["record_file"])
    }


def write_run_json(out_dir: Path, info: Mapping[str, Any], runs: Mapping[str, AnalysisRun], started: float, *, finished: bool = False) -> None:
    """(Re)write run.json: the run's description, and per analysis its status, timings and files."""
    if not _is_main_process():
        return  # process 0 of a data-parallel study writes it
    current = {name: dataclasses.asdict(run) | {"seconds": round(run.seconds, 2), "figure_seconds": round(run.figure_seconds, 2)}
               for name, run in runs.items()}
    every = dict(info.get("earlier", {})) | current
    data = {key: value for key, value in info.items() if key != "earlier"} | {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds") if finished else None,
        "seconds": round(time.time() - started, 2),
        "analyses": {name: every[name] for name in ALL_ANALYSES if name in every},
    }
    tmp = out_dir / f"{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out_dir / RUN_FILE)


def read_run_info(out_dir: str | Path) -> dict[str, Any]:
    """run.json of a study folder."""
    path = Path(out_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {out_dir} a study folder (written by `tl-video study`)?")
    return json.loads(path.read_text(encoding="utf-8"))


def _check_formats(formats: Sequence[str]) -> list[str]:
    from tl_video.plots.style import STATIC_FORMATS

    formats = list(dict.fromkeys(formats))
    unknown = [fmt for fmt in formats if fmt not in ("html", *STATIC_FORMATS)]
    if unknown:
        raise ValueError(f"--formats {','.join(unknown)}: not a figure format; valid: html, {', '.join(STATIC_FORMATS)}")
    return formats


def _coerce(spec: dataclasses.Field, value: Any) -> Any:
    """Lists from JSON/TOML become tuples where the options field's default is a tuple."""
    default = spec.default if spec.default is not dataclasses.MISSING else None
    if isinstance(value, list) and isinstance(default, tuple):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _resolve(module: Any, annotation: Any) -> type:
    if isinstance(annotation, str):
        annotation = getattr(module, annotation.strip("'\""), None)
    if not isinstance(annotation, type) or not hasattr(annotation, "read"):
        raise ImportError(f"{module.__name__}: the run function must be annotated with its result class (one with .read)")
    return annotation


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {message}"
