"""The ``kdformer`` command line: a thin layer over :mod:`kdformer.pipeline`.

Every training command takes a YAML config plus ``key.sub=value`` overrides, e.g.
``kdformer run configs/demo.yaml distill.train.epochs=1 student.num_layers=2``.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from kdformer.config import (
    ConfigError,
    ConvertConfig,
    DataError,
    ExperimentConfig,
    ExportConfig,
    ReportConfig,
    describe_fields,
    dump_config,
    load_config,
)
from kdformer.config.convert import CONVERT_TARGETS

SECTIONS_HELP = (
    "Config sections: output_dir, seed, task (type classification, ner, qa, text or embedding), "
    "teacher, finetune, general, student, distill, report. Every field with its meaning: "
    "`kdformer config fields`."
)

app = typer.Typer(
    help="Knowledge distillation for transformer language models: teacher -> smaller, faster "
    "student, with a cost/quality report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(
    help="Inspect configs and the documented config fields.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
console = Console()
err = Console(stderr=True)

ConfigArg = typer.Argument(..., help="YAML config file.", exists=False)
OverridesArg = typer.Argument(None, help="Overrides key.sub=value, e.g. distill.train.epochs=1.")
OverwriteOpt = typer.Option(
    False,
    "--overwrite",
    help="Redo finished stages (the old output is kept until the new one is saved).",
)
ResumeOpt = typer.Option(
    False, "--resume", help="Continue from the latest checkpoint of an interrupted run."
)
WeakTeacherOpt = typer.Option(
    False,
    "--allow-weak-teacher",
    help="Distil even when the teacher does not beat the task's trivial baseline clearly "
    "(report.min_teacher_gain); the report marks retention as meaningless.",
)


def _quiet_libraries(verbose: bool) -> None:
    """Library logs and weight-loading bars off (training bars stay) unless --verbose. Through
    the libraries' environment variables, read when a command first imports them, so that
    `--help` and the config commands never load them; directly when they are loaded already."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        transformers = sys.modules["transformers"]
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def _load(
    config: Path, overrides: list[str] | None, allow_weak_teacher: bool = False
) -> ExperimentConfig:
    extra = ["distill.allow_weak_teacher=true"] if allow_weak_teacher else []
    return load_config(config, [*(overrides or []), *extra])


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors the user can fix (config, data, arguments) become one clear line and exit code 2."""
    from pydantic import ValidationError

    try:
        yield
    except (ConfigError, DataError, ValidationError) as exc:
        _fail(exc)
    except Exception as exc:
        training = sys.modules.get("kdformer.training")  # only a command that trained loaded it
        if training is not None and isinstance(exc, training.TrainingDiverged):
            _fail(exc)
        raise


SHARDED_COMMANDS = ("run", "finetune", "distill")
"""The commands that train, and so can spread over several processes."""


class Terminated(KeyboardInterrupt):
    """A stop signal, raised where the process is, so it unwinds as Ctrl-C does: SIGTERM (a
    scheduler, ``docker stop``, a spot instance reclaimed) or SIGHUP (the terminal or the SSH
    session closed)."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    if signum == getattr(signal, "SIGHUP", None):
        _detach_from_terminal()
    raise Terminated(signum)


def _detach_from_terminal() -> None:
    """After a hang-up, writing to the terminal that is gone raises EIO, and a progress bar
    closing on the way out would then turn the clean exit into a traceback: point standard
    output and error that are terminals at the null device (a redirected log keeps its
    lines, the message of what was kept included). A hung-up terminal no longer passes
    ``isatty``; it is still a character device, which files and pipes are not."""
    import stat

    with suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            with suppress(OSError):
                if stat.S_ISCHR(os.fstat(fd).st_mode):
                    os.dup2(null, fd)
        os.close(null)


def _stop_signals() -> list[int]:
    """The signals a training command turns into :class:`Terminated`: SIGTERM, and SIGHUP
    where the platform has it and it is not ignored (``nohup`` ignores it so that the run
    outlives its terminal: that wish is kept)."""
    found = [signal.SIGTERM]
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) == signal.SIG_DFL:
        found.append(hangup)
    return found


def _kept_by_run(root: Path) -> str:
    """What an interrupted run leaves: its finished models and newest checkpoints."""
    from kdformer.pipeline.outputs import Paths, is_finished
    from kdformer.training import latest_checkpoint

    paths = Paths(root)
    models = (paths.converted, paths.teacher, paths.general / "student", paths.student,
              paths.one_stage / "student")  # fmt: skip
    finished = [str(p) for p in models if is_finished(p)]
    folders = sorted((root / "checkpoints").glob("*")) + sorted(root.glob("*/checkpoints/*"))
    last = [str(c) for c in (latest_checkpoint(f) for f in folders) if c is not None]
    return (
        "finished models "
        + (", ".join(finished) if finished else "none")
        + "; checkpoints "
        + (", ".join(last) if last else "none yet (nothing to resume from)")
    )


@contextmanager
def explain_interrupt(
    output_dir: Path, kept: Callable[[], str] | None = None, resume_flag: bool = True
) -> Iterator[None]:
    """Ctrl-C, SIGTERM or SIGHUP ends a command with what was kept (``kept``, else the run's
    models and checkpoints in ``output_dir``) and the command that continues it (with
    ``--resume`` when ``resume_flag``); exit code 130 (Ctrl-C), 143 (SIGTERM) or 129
    (SIGHUP), as shells report them."""
    previous = {number: signal.signal(number, _raise_terminated) for number in _stop_signals()}
    try:
        yield
    except KeyboardInterrupt as stop:
        import shlex

        again = [a for a in sys.argv[1:] if a != "--overwrite"]
        again += [] if "--resume" in again or not resume_flag else ["--resume"]
        signum = stop.signum if isinstance(stop, Terminated) else None
        name = signal.Signals(signum).name if signum is not None else ""
        message = (
            f"[bold yellow]{f'terminated ({name})' if name else 'interrupted'}.[/] Kept: "
            + (kept() if kept is not None else _kept_by_run(Path(output_dir)))
            + ". Continue with: "
            + shlex.join(["kdformer", *again])
        )
        with suppress(OSError):  # SIGHUP: the terminal that would show it may be gone
            err.print(message, soft_wrap=True, markup=True)
        raise typer.Exit(128 + signum if signum is not None else 130) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@app.callback()
def main_callback(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library warnings and logs."),
) -> None:
    _quiet_libraries(verbose)
    from kdformer import distributed

    processes = distributed.process_count()
    if processes > 1 and ctx.invoked_subcommand not in SHARDED_COMMANDS:
        _fail(
            ConfigError(
                f"`kdformer {ctx.invoked_subcommand}` runs in one process, and this one was "
                f"launched as one of {processes} (torchrun / accelerate launch): run it directly. "
                f"Only {', '.join(SHARDED_COMMANDS)} spread training over several processes"
            )
        )
    if processes > 1 and not distributed.is_main():
        from kdformer.pipeline.outputs import console as stage_console

        console.quiet = stage_console.quiet = True  # one process prints; errors still show


@app.command(epilog=SECTIONS_HELP)
def finetune(
    config: Path = ConfigArg,
    overrides: list[str] | None = OverridesArg,
    overwrite: bool = OverwriteOpt,
    resume: bool = ResumeOpt,
) -> None:
    """Fine-tune the teacher (or any model) on the task, into <output_dir>/teacher."""
    from kdformer import pipeline

    with user_errors():
        cfg = _load(config, overrides)
        if cfg.finetune is None:
            cfg = cfg.model_copy(update={"finetune": cfg.distill.train})
        with explain_interrupt(cfg.output_dir):
            pipeline.finetune(cfg, overwrite=overwrite, resume=resume)


@app.command(epilog=SECTIONS_HELP)
def distill(
    config: Path = ConfigArg,
    overrides: list[str] | None = OverridesArg,
    overwrite: bool = OverwriteOpt,
    resume: bool = ResumeOpt,
    allow_weak_teacher: bool = WeakTeacherOpt,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the plan (matched layers and modules per knowledge term, projections, "
        "parameters, measured step time, memory estimate) without training.",
    ),
) -> None:
    """Distill the teacher into a student, into <output_dir>/student: on a task (the teacher
    trained for it), or on raw text (task: {type: text}) for a general student."""
    from kdformer import pipeline

    with user_errors():
        cfg = _load(config, overrides, allow_weak_teacher)
        if dry_run:
            from kdformer.pipeline.plan import distill_plan

            for line in distill_plan(cfg):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        with explain_interrupt(cfg.output_dir):
            pipeline.distill(cfg, overwrite=overwrite, resume=resume)


@app.command(epilog=SECTIONS_HELP)
def run(
    config: Path = ConfigArg,
    overrides: list[str] | None = OverridesArg,
    stages: str = typer.Option(
        "",
        help="Comma-separated subset of finetune,general,distill,evaluate (default: all "
        "configured).",
    ),
    overwrite: bool = OverwriteOpt,
    resume: bool = ResumeOpt,
    allow_weak_teacher: bool = WeakTeacherOpt,
) -> None:
    """Run the pipeline from one YAML file: finetune (if configured) -> distill -> evaluate."""
    from kdformer import pipeline

    chosen = [s.strip() for s in stages.split(",") if s.strip()]
    bad = [s for s in chosen if s not in pipeline.STAGES]
    if bad:
        _fail(ConfigError(f"unknown stage(s) {bad}; valid: {', '.join(pipeline.STAGES)}"))
    with user_errors():
        cfg = _load(config, overrides, allow_weak_teacher)
        with explain_interrupt(cfg.output_dir):
            pipeline.run(cfg, chosen or None, overwrite=overwrite, resume=resume)  # type: ignore[arg-type]


@app.command()
def study(
    study_file: Path = typer.Argument(..., help="Study YAML file (docs/studies/README.md)."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Validate every run, list the runs and which are finished; train nothing.",
    ),
) -> None:
    """Run a study: variants x grid x seeds of one base config, teachers fine-tuned once and
    shared, finished runs skipped; writes runs.csv, summary.md and plots after every run."""
    from kdformer import studies

    with user_errors():
        config, folder = studies.load_study(study_file)
        plan = studies.plan_study(config, folder, str(study_file))
        with err.status(f"validating {len(plan.runs)} runs") as status:
            studies.validate_plan(plan, lambda run_id: status.update(f"validating {run_id}"))
        if dry_run:
            for line in studies.plan_lines(plan):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        for run_id, status_text, _ in studies.describe_plan(plan):
            if status_text == "changed":
                err.print(
                    f"[yellow]run {run_id} finished with a different config; its result is kept "
                    f"(delete {config.output_dir / 'runs' / run_id} to redo it)[/]"
                )
        with explain_interrupt(config.output_dir, lambda: _kept_by_study(plan), False):
            studies.run_study(plan, validate=False)
        console.print(f"study {config.name} done: {config.output_dir / 'summary.md'}")


def _kept_by_study(plan: Any) -> str:
    """What an interrupted study leaves: its finished runs and the checkpoints it resumes."""
    from kdformer.training import latest_checkpoint

    done = sum(1 for run in plan.runs if run.finished)
    folders = [r.folder / "checkpoints" / "student" for r in plan.runs if not r.finished]
    folders += [t.root / "checkpoints" / "teacher" for t in plan.teachers.values() if t.root]
    last = [str(c) for c in map(latest_checkpoint, folders) if c is not None]
    return (
        f"finished runs {done} of {len(plan.runs)} (in {plan.output_dir / 'runs.csv'}); "
        f"checkpoints {', '.join(last) if last else 'none (the interrupted run starts over)'}. "
        "The study skips finished runs and resumes from these checkpoints"
    )


@app.command()
def evaluate(
    model_dir: str = typer.Argument(..., help="Model folder (or hub name) to evaluate."),
    task_overrides: list[str] | None = typer.Argument(
        None, help="Task settings as task.key=value, e.g. task.eval_split=test."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Take the task (and report) sections from this experiment config."
    ),
    task: str | None = typer.Option(
        None,
        help="Task name: a GLUE task, 'classification' (own files), conll2003, squad, text "
        "(default sst2 without --config).",
    ),
    data_dir: Path | None = typer.Option(None, help="Data root, e.g. ../shared/data/glue."),
    eval_file: Path | None = typer.Option(None, help="Evaluation file (own files)."),
    text_column: str | None = typer.Option(None, help="'classification': text column."),
    text_pair_column: str | None = typer.Option(None, help="'classification': second text column."),
    label_column: str | None = typer.Option(None, help="'classification': label column."),
    max_eval_samples: int | None = typer.Option(None, help="Evaluate on the first N examples."),
    max_length: int | None = typer.Option(None, help="Tokens per model input."),
    reference: str | None = typer.Option(
        None, help="A reference model (e.g. the teacher) measured alongside; retention is vs it."
    ),
    batch_size: int = typer.Option(128, min=1, help="Evaluation batch size."),
    latency_batch_size: int = typer.Option(32, min=1, help="Batch size for latency timing."),
    latency_seq_length: int = typer.Option(128, min=1, help="Sequence length for latency timing."),
    repeats: int = typer.Option(20, min=1, help="Timed forward passes (median reported)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1."),
    memory: bool = typer.Option(
        True, help="Measure each model folder's peak serving memory (a fresh process each)."
    ),
    output_dir: Path | None = typer.Option(None, help="Write report.json and report.md here."),
    trust_remote_code: bool = typer.Option(False, help="Allow model repository code to run."),
) -> None:
    """Metrics, latency, throughput, parameters and size of a model on a task's eval set;
    retention, gain kept and speed-up against a --reference model when one is given."""
    if not sys.stderr.isatty():  # piped or captured: no progress bar among the report's lines
        os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is first imported, below
    from kdformer import pipeline
    from kdformer.devices import folder_problem, resolve_device
    from kdformer.report import write_report
    from kdformer.report.render import print_report

    with user_errors():
        resolve_device(device)  # before any data or model loads
        problem = folder_problem(output_dir) if output_dir is not None else None
        if problem is not None:
            raise ConfigError(
                f"--output-dir {problem}: give a folder (report.json and report.md are written "
                "into it)"
            )
        base = load_config(config) if config is not None else None
        section = base.task.model_dump(mode="json", exclude_unset=True) if base else {}
        if task is not None or base is None:
            section = {"name": task or "sst2"}
        options = {
            "data_dir": data_dir,
            "eval_file": eval_file,
            "text_column": text_column,
            "text_pair_column": text_pair_column,
            "label_column": label_column,
            "max_eval_samples": max_eval_samples,
            "max_length": max_length,
        }
        section.update(
            {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if v is not None}
        )
        bad = [o for o in task_overrides or [] if not o.startswith("task.")]
        if bad:
            raise ConfigError(f"evaluate takes only task.* settings as overrides, not {bad}")
        experiment = load_config(None, [f"task={json.dumps(section)}", *(task_overrides or [])])
        report_cfg = ReportConfig.model_validate(
            {
                **(base.report if base else ReportConfig()).model_dump(),
                "latency_batch_size": latency_batch_size,
                "latency_seq_length": latency_seq_length,
                "latency_repeats": repeats,
                "device": device,
                "memory": memory,
            }
        )
        models = ([("reference", reference)] if reference else []) + [("model", model_dir)]
        report = pipeline.measure_models(
            models,
            experiment.task,
            report_cfg,
            eval_batch_size=batch_size,
            trust_remote_code=trust_remote_code,
        )
        print_report(report, console)
        if output_dir is not None:
            paths = write_report(report, output_dir)
            console.print(f"wrote {paths[0]} and {paths[1]}")


@app.command()
def students(
    params: str | None = typer.Option(
        None, "--params", help="Parameter budget: 11M, 4.4M, 500k, 22000000."
    ),
    like: str | None = typer.Option(
        None,
        "--like",
        help="Teacher (short name, hub name or folder): shapes take its vocabulary, head size "
        "and architecture, and are at most as deep and wide.",
    ),
    ratio: float | None = typer.Option(
        None, "--ratio", help="Budget as a fraction of the --like teacher's parameters, e.g. 0.25."
    ),
    tolerance: float = typer.Option(0.15, help="Accept shapes within this fraction of the budget."),
    batch_size: int = typer.Option(32, help="Batch size for latency timing."),
    seq_length: int = typer.Option(128, help="Sequence length for latency timing."),
    repeats: int = typer.Option(5, help="Timed forward passes per shape (median reported)."),
    warmup: int = typer.Option(1, help="Untimed warm-up passes per shape."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Count parameters only."),
    max_candidates: int = typer.Option(
        20, help="Keep at most this many shapes (those closest to the budget)."
    ),
    device: str = typer.Option("auto", help="Where to time: auto, cpu, cuda, cuda:1."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Candidate student shapes (layers x hidden x heads x intermediate) at a parameter budget,
    with exact parameter counts and measured latency, ranked by the distillation guideline
    (docs/guideline.md): teacher width at half depth or more first, then deep pruned shapes;
    one layer and random init last. Each row says why."""
    import json

    from rich import box

    from kdformer import explorer

    with user_errors():
        target = explorer.resolve_target(params, like, ratio)
        rows = explorer.explore(
            target,
            tolerance=tolerance,
            latency=not no_latency,
            batch_size=batch_size,
            seq_length=seq_length,
            repeats=repeats,
            warmup=warmup,
            device=device,
            max_candidates=max_candidates,
        )
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
        return
    vocab = getattr(target.config, "vocab_size", None)
    source = f"like {target.teacher}" if target.teacher else "BERT-base vocabulary"
    tokens = f"{vocab:,}" if isinstance(vocab, int) else "?"
    console.print(
        f"Budget {target.budget / 1e6:.2f}M parameters ±{tolerance * 100:g}% ({source}, {tokens} "
        f"tokens). Counted as the encoder (AutoModel: embeddings and pooler included, no task "
        f"head). Head size {target.head_size}, ffn (intermediate) = 4 x hidden, layers "
        f"1-{target.max_layers}.",
        soft_wrap=True,
    )
    if not rows:
        err.print(explorer.no_fit_reason(target, tolerance), soft_wrap=True)
        raise typer.Exit(1)
    reference = next((r for r in rows if r.note == "teacher"), None)
    timed = not no_latency
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for header in ("layers", "hidden", "heads", "ffn", "params", "vs budget"):
        table.add_column(header, justify="right", no_wrap=True)
    if timed:
        table.add_column("ms", justify="right", no_wrap=True)
        if reference is not None:
            table.add_column("speed-up", justify="right", no_wrap=True)
    # init and why in one wrapping column, so the figures are never cut on a narrow terminal
    table.add_column("init: why")
    for row in rows:
        cells = [
            str(row.layers),
            str(row.hidden),
            str(row.heads),
            str(row.intermediate),
            f"{row.parameters / 1e6:.2f}M",
            "" if row is reference else f"{row.parameters / target.budget - 1:+.1%}",
        ]
        if timed:
            cells.append(f"{row.latency_ms:.1f}" if row.latency_ms is not None else "")
            if reference is not None and row.latency_ms and reference.latency_ms:
                cells.append(f"{reference.latency_ms / row.latency_ms:.2f}x")
            elif reference is not None:
                cells.append("")
        if row is reference:
            cells.append(row.note)
        else:
            cells.append(f"{row.init}: {row.why}" + (f"; preset {row.note}" if row.note else ""))
        table.add_row(*cells, end_section=reference is not None and row is rows[-2])
    console.print(table)
    console.print(
        "Ranked by docs/guideline.md (§: its sections), best first: the teacher's width at half "
        "its depth or more, then deeper pruned shapes; one layer and random init last.",
        soft_wrap=True,
    )
    if timed:
        console.print(
            f"ms: median of {repeats} forward passes of a {batch_size} x {seq_length} batch on "
            "this machine, all shapes timed round-robin.",
            soft_wrap=True,
        )
    best = rows[0]
    console.print(
        f"Use one: kdformer run CONFIG {best.overrides()} student.init={best.init}",
        soft_wrap=True,
    )
    console.print(f"Why: {explorer.proposal_reason(target, best, tolerance)}", soft_wrap=True)


@app.command()
def review(
    review_file: Path = typer.Argument(..., help="The review file (YAML)."),
    overwrite: bool = OverwriteOpt,
    resume: bool = ResumeOpt,
) -> None:
    """The performance review: every architecture x task as a convert-then-distill run, then
    latency and memory at each length; writes review.md / review.json / PNG plots."""
    from kdformer.config.review import load_review
    from kdformer.review import run_review

    with user_errors():
        config, folder = load_review(review_file)
        with explain_interrupt(config.output_dir, lambda: _kept_by_review(config, folder)):
            run_review(config, folder, overwrite, resume)
    console.print(f"review written to {config.output_dir / 'review.md'}")


def _kept_by_review(review: Any, folder: Path) -> str:
    """What an interrupted review leaves: its finished cells (published beside the tables, or
    a run's report) and the checkpoints of the unfinished ones, which ``--resume`` continues."""
    from kdformer.review import run_config
    from kdformer.review.cells import cell_path
    from kdformer.training import latest_checkpoint

    cells = [
        (Path(run_config(review, folder, task, arch).output_dir),
         cell_path(review.output_dir, task.name, arch.name))
        for task in review.tasks
        for arch in review.architectures
    ]  # fmt: skip
    done = [
        published if published.is_file() else root
        for root, published in cells
        if published.is_file() or (root / "report.json").is_file()
    ]
    folders = [
        f for root, published in cells if published not in done and root not in done
        for f in sorted(root.glob("checkpoints/*"))
    ]  # fmt: skip
    last = [str(c) for c in map(latest_checkpoint, folders) if c is not None]
    return (
        f"finished cells {len(done)} of {len(cells)}"
        + (f" ({', '.join(map(str, done))})" if done else "")
        + f"; checkpoints {', '.join(last) if last else 'none yet (nothing to resume from)'}. "
        f"The review reuses finished cells (kept in {review.output_dir / 'cells'})"
    )


def _convert_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``kdformer convert`` one option per field of the ``convert:`` section, with its
    type, default and description (``--to``'s choices are the registered targets), so a
    target's options reach the command line from its config registration alone."""
    signature = inspect.signature(command, eval_str=True)
    given = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    fields = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=field.annotation,
            default=typer.Option(
                ... if field.is_required() else field.default, help=field.description
            ),
        )
        for name, field in ConvertConfig.model_fields.items()
    ]
    command.__signature__ = signature.replace(parameters=[*given, *fields])  # type: ignore[attr-defined]
    return command


@app.command()
@_convert_options
def convert(
    source: str = typer.Argument(..., help="A BERT/RoBERTa model folder, short name or hub name."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write the model to."),
    **options: Any,
) -> None:
    """Convert a full-attention BERT/RoBERTa encoder into an efficient-attention one with the
    same weights (positions extended to --max-length); fine-tune it on the task next."""
    from kdformer.conversion import convert_checkpoint, dropped_heads, dropped_positions
    from kdformer.models import load_model_config

    to, max_length = options.pop("to"), options.pop("max_length")
    with user_errors():
        source_config = load_model_config(source)
        source_positions = dropped_positions(source_config, max_length)
        if source_positions is not None:
            err.print(
                f"[yellow]warning: --max-length {max_length} is below the {source_positions} "
                f"positions of {source}: the converted model keeps only the first {max_length} "
                f"and takes inputs of at most {max_length} tokens. Give --max-length "
                f"{source_positions} or more to keep them all.[/]",
                soft_wrap=True,
            )
        out = convert_checkpoint(source, to, output, max_length, **options)
    note = CONVERT_TARGETS[to].load_note
    shown = f" ({note})" if note else ""
    console.print(f"converted {source} -> {to} ({max_length} positions): {out}{shown}")
    heads = dropped_heads(source_config)
    if heads:  # a fine-tuned teacher's trained head is lost: say so, not only in the docs
        err.print(
            f"[yellow]note: only the encoder is converted: the head of {source} "
            f"({', '.join(heads)}) is left out, so {out} has no trained task head. Fine-tune it "
            "on the task next (a `convert:` section in a run config converts and fine-tunes)[/]",
            soft_wrap=True,
        )


EXPORT = ExportConfig()
"""The export section's defaults, which the export command's options share."""


@app.command()
def export(
    model_dir: Path = typer.Argument(..., help="A finished model folder, e.g. OUTPUT_DIR/student."),
    quantize: bool = typer.Option(EXPORT.quantize, help="Also write int8 dynamic quantisation."),
    opset: int = typer.Option(EXPORT.opset, min=14, help="ONNX opset."),
    atol: float = typer.Option(
        EXPORT.atol, min=0.0, help="Largest output difference from PyTorch the export may have."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="The run config whose student this is (default: the run's "
        "config.yaml next to the folder), to measure the exported rows into its report.",
    ),
    report: bool = typer.Option(
        True, help="Measure the run's report and model card again with the exported rows."
    ),
    overwrite: bool = typer.Option(False, help="Export again even when up to date."),
) -> None:
    """Export a model to ONNX (model_dir/onnx), check it against PyTorch, quantise it to int8,
    and add rows for both to the run's report and model card (metric, latency, size, memory)."""
    from kdformer import pipeline
    from kdformer.pipeline.export import export_model, run_config_of
    from kdformer.tasks import build_task

    with user_errors():
        run_config = load_config(config) if config is not None else run_config_of(model_dir)
        if run_config is not None and config is not None:
            student = pipeline.Paths(run_config.output_dir).student.resolve()
            if student != model_dir.resolve():
                raise ConfigError(
                    f"{config} is the config of the run whose student is {student}, not "
                    f"{model_dir}: give that folder, or drop --config"
                )
        task = build_task(run_config.task, run_config.seed) if run_config is not None else None
        export_model(model_dir, quantize, opset, atol, overwrite, task)
        if not report:
            return
        if run_config is None:
            console.print(
                f"{model_dir} is not a run's student (no kdformer config.yaml next to it): "
                "the export is checked but not scored; give --config to score it on a task"
            )
            return
        on_cpu = run_config.report.model_copy(update={"device": "cpu"})
        pipeline.evaluate(run_config.model_copy(update={"report": on_cpu}))


@app.command()
def models() -> None:
    """List the short model names kdformer resolves offline."""
    from kdformer.models import SHORT_NAMES

    table = Table("short name", "what")
    for name, (_, text) in SHORT_NAMES.items():
        table.add_row(name, text)
    console.print(table)
    console.print("Any hub name or local model folder works too.")


@app.command()
def knowledge() -> None:
    """List the knowledge types (loss terms) and their fields."""
    from kdformer.knowledge import KNOWLEDGE

    for name, entry in sorted(KNOWLEDGE.items()):
        console.print(
            f"[bold]{name}[/]: {(entry.term_class.__doc__ or entry.config_class.__doc__ or '').strip().splitlines()[0]}"
        )
        for key, type_name, default, text in describe_fields(entry.config_class):
            if key != "type":
                console.print(f"    {key} ({type_name}, default {default}): {text}")


@config_app.command("show")
def config_show(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """Validate a config (with overrides) and print it with every default filled in."""
    with user_errors():
        sys.stdout.write(dump_config(_load(config, overrides)))


@config_app.command("fields")
def config_fields(
    prefix: str = typer.Argument("", help="Only fields under this key, e.g. distill.train"),
) -> None:
    """Every config field with its type, default and meaning (a table on a wide terminal, one
    block per field otherwise); keys are printed whole."""
    from rich.padding import Padding
    from rich.text import Text

    from kdformer.config.reference import fields_under

    with user_errors():
        rows = fields_under(ExperimentConfig, prefix)
    key_width = max(len(row[0]) for row in rows)
    if console.width >= key_width + 70:
        table = Table()
        table.add_column("key", no_wrap=True, min_width=key_width)
        for header in ("type", "default", "meaning"):
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    for key, type_name, default, text in rows:  # narrow: one block per field, nothing cut
        line = Text(key, style="bold", overflow="fold")
        line.append(f"  {type_name}, default {default}", style="")
        console.print(line)
        if text:
            console.print(Padding(Text(text, overflow="fold"), (0, 0, 0, 4), expand=False))


@config_app.command("reference")
def config_reference(
    output: Path | None = typer.Option(None, help="Write here instead of standard output."),
) -> None:
    """The Markdown config reference (docs/config.md is generated with this)."""
    from kdformer.docs import config_reference_markdown

    text = config_reference_markdown()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _unwrap_help(*apps: typer.Typer) -> None:
    """Command help comes from docstrings wrapped at 100 columns; joined back into paragraphs
    so the terminal wraps them to its own width."""
    for one in apps:
        for command in one.registered_commands:
            doc = command.help or inspect.getdoc(command.callback) or ""
            command.help = re.sub(r"(?<!\n)\n(?!\n)", " ", doc)


_unwrap_help(app, config_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
