"""Studies: many distillation runs from one YAML file, sharing teachers, resumable, summarised.

A study file names a ``base`` experiment config, optional ``overrides`` of it, optional ``tasks``
(label -> overrides), optional hand-picked ``variants`` (name -> overrides), a ``grid`` (dotted
config field -> values; cartesian product) and ``seeds``. Every run is
``tasks x seeds x variants x grid`` applied to the base, in that order of precedence::

    base <- overrides <- tasks[label] <- variants[i].overrides <- grid values <- seed

Layout of ``output_dir``::

    runs/<run-id>/          one pipeline output folder per run (student/, report.json, ...)
    runs/<run-id>/result.json   written last: its presence marks the run as finished
    teachers/<task>-<hash>/ the task-fine-tuned teacher shared by every run with the same task,
                            teacher and finetune settings (unless ``teachers_dir`` moves it)
    teachers.json           each teacher's metrics and latency, measured once
    runs.csv, summary.md    one row per finished run; mean +- std over seeds per point
    bars.png                one panel per task, error bars over seeds
    retention_vs_speedup.png    when ``plot.scatter`` is on

``base`` is resolved relative to the study file; every other path (output_dir, teachers_dir, the
base's data_dir) relative to the directory kdformer runs in, as in experiment configs.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import json
import math
import re
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from kdformer.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    Section,
    apply_overrides,
    format_validation_error,
)

RESULT_FILE = "result.json"
Overrides = list[str] | dict[str, Any]
_RESERVED = {"seed": "use `seeds:`", "output_dir": "each run gets <output_dir>/runs/<run-id>"}


# --------------------------------------------------------------------------------------------
# The study file
# --------------------------------------------------------------------------------------------


class VariantConfig(Section):
    """A hand-picked combination of settings, compared with the other variants."""

    name: str = Field(..., min_length=1, description="Short name; part of the run ids.")
    overrides: Overrides = Field(
        default_factory=list,
        description="key.sub=value strings, or a mapping {key.sub: value}, applied to the base.",
    )


class PlotConfig(Section):
    """What the plots show."""

    x: str | None = Field(
        None,
        description="Dimension along the x axis of the bar chart: 'variant' or a grid field; the "
        "other dimensions become bar series. Unset: one bar per variant/grid point.",
    )
    y: Literal["retention", "metric"] = Field(
        "retention",
        description="Bar height: retention (% of the teacher's main metric) or the main metric.",
    )
    scatter: bool = Field(
        False, description="Also plot retention vs speed-up, one point per variant/grid point."
    )


class StudyConfig(Section):
    """A study: variants x grid x seeds (x tasks) runs of one base experiment."""

    name: str = Field(..., min_length=1, description="Study name, shown in tables and plots.")
    description: str = Field("", description="What the study asks; printed in summary.md.")
    output_dir: Path = Field(..., description="Where runs, teachers, tables and plots go.")
    base: Path | dict[str, Any] = Field(
        ...,
        description="Experiment config: a YAML path relative to the study file, or an inline "
        "mapping.",
    )
    overrides: Overrides = Field(
        default_factory=list, description="Applied to the base before anything else."
    )
    tasks: dict[str, Overrides] | None = Field(
        None,
        description="Task label -> overrides (e.g. task.name, task.max_length, step counts). "
        "Unset: the base's task only.",
    )
    variants: list[VariantConfig] | None = Field(
        None, description="Hand-picked combinations: [{name, overrides}]."
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted config field -> values; every combination is run (cartesian product).",
    )
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1, description="Run seeds.")
    teacher_seed: int | None = Field(
        None, description="Seed for fine-tuning the shared teachers (unset: the base's seed)."
    )
    teachers_dir: Path | None = Field(
        None,
        description="Where fine-tuned teachers live (unset: <output_dir>/teachers). Point several "
        "studies at one folder to fine-tune each teacher once for all of them.",
    )
    keep_checkpoints: bool = Field(
        False,
        description="Keep each finished run's Trainer checkpoints (logs are always kept).",
    )
    plot: PlotConfig = Field(default_factory=PlotConfig, description="Plot settings.")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if key in _RESERVED:
                raise ValueError(f"grid over '{key}' is not allowed: {_RESERVED[key]}")
            if not values:
                raise ValueError(f"grid field '{key}' has no values")
            if len({_value_text(v) for v in values}) != len(values):
                raise ValueError(f"grid field '{key}' lists a value twice: {values}")
        return grid

    @field_validator("variants")
    @classmethod
    def _unique_variants(cls, variants: list[VariantConfig] | None) -> list[VariantConfig] | None:
        if variants is not None:
            if not variants:
                raise ValueError("variants is empty: list at least one, or leave it out")
            names = [v.name for v in variants]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"variant names must be distinct; repeated: {twice}")
        return variants

    @model_validator(mode="after")
    def _plot_axis(self) -> StudyConfig:
        x = self.plot.x
        if x is not None and x != "variant" and x not in self.grid:
            valid = ["variant", *self.grid] if self.variants else list(self.grid)
            raise ValueError(f"plot.x '{x}' is neither 'variant' nor a grid field; valid: {valid}")
        if x == "variant" and not self.variants:
            raise ValueError("plot.x is 'variant' but the study has no variants")
        return self


def override_list(overrides: Overrides) -> list[str]:
    """``key.sub=value`` strings from a list of them or a ``{key.sub: value}`` mapping."""
    if isinstance(overrides, dict):
        return [f"{key}={_value_text(value)}" for key, value in overrides.items()]
    return list(overrides)


def _value_text(value: Any) -> str:
    """A value as YAML flow text that :func:`kdformer.config.parse_override` reads back as-is."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False).strip()
    return text.removesuffix("...").strip()


# --------------------------------------------------------------------------------------------
# The plan: every run, validated before anything trains
# --------------------------------------------------------------------------------------------


@dataclass
class TeacherPlan:
    """A teacher shared by every run whose task, teacher and finetune settings are the same."""

    key: str  # folder name (<task>-<hash>) or the given teacher's name when nothing is fine-tuned
    config: ExperimentConfig | None  # fine-tuning config (output_dir = root); None: use as is
    reference: ModelConfig  # what the runs distil from

    @property
    def root(self) -> Path | None:
        return self.config.output_dir if self.config is not None else None


@dataclass
class PlannedRun:
    run_id: str
    task: str  # task label
    variant: str | None
    grid: dict[str, Any]
    seed: int
    overrides: list[str]  # this run's own overrides on top of base + study overrides
    config: ExperimentConfig  # what pipeline.distill runs (shared teacher, finetune: null)
    teacher: TeacherPlan
    point: str  # the variant/grid label shared by all seeds of this point

    @property
    def folder(self) -> Path:
        return self.config.output_dir

    @property
    def result_path(self) -> Path:
        return self.folder / RESULT_FILE

    @property
    def finished(self) -> bool:
        return self.result_path.is_file()


@dataclass
class StudyPlan:
    study: StudyConfig
    source: str
    runs: list[PlannedRun]
    teachers: dict[str, TeacherPlan] = field(default_factory=dict)
    _tasks: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def output_dir(self) -> Path:
        return self.study.output_dir

    def task(self, config: ExperimentConfig) -> Any:
        """The Task for a config's task section and seed, built once and its splits read once
        (runs sharing data share it)."""
        from kdformer.tasks import build_task

        key = _digest([config.task.model_dump(mode="json"), config.seed])
        if key not in self._tasks:
            task = build_task(config.task, config.seed)
            read, loaded = task.load, {}

            def load(split: str) -> Any:
                if split not in loaded:
                    loaded[split] = read(split)
                return loaded[split]

            task.load = load  # type: ignore[method-assign]
            self._tasks[key] = task
        return self._tasks[key]


def load_study(path: str | Path) -> tuple[StudyConfig, Path]:
    """Read and validate a study file; returns it with its folder (for a relative ``base``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (name, output_dir, base, grid, seeds, ...)")
    try:
        return StudyConfig.model_validate(data), path.parent
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, StudyConfig, str(path))) from None


def _base_data(study: StudyConfig, folder: Path) -> tuple[dict[str, Any], str]:
    if isinstance(study.base, dict):
        return copy.deepcopy(study.base), "the inline base"
    path = study.base if study.base.is_absolute() else folder / study.base
    if not path.is_file():
        raise ConfigError(
            f"study '{study.name}': base config not found: {path} (base is relative to the study "
            "file's folder)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections at the top level")
    return data, str(path)


def _apply(data: dict[str, Any], overrides: list[str], where: str, study: str) -> None:
    try:
        apply_overrides(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"study '{study}', {where}: {exc}") from None


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("_")
    if len(slug) > 40:
        slug = slug[:31] + "~" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return slug or "_"


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Grid keys shortened to their last part where that stays unambiguous."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _teacher_plan(config: ExperimentConfig, study: StudyConfig, teacher_seed: int) -> TeacherPlan:
    if config.finetune is None:
        return TeacherPlan(key=config.teacher.name, config=None, reference=config.teacher)
    task = config.task.model_dump(mode="json", exclude={"max_eval_samples"})
    payload = {
        "task": task,
        "teacher": config.teacher.model_dump(mode="json"),
        "finetune": config.finetune.model_dump(mode="json"),
        "seed": teacher_seed,
    }
    key = f"{_slug(config.task.name)}-{_digest(payload)}"
    root = (study.teachers_dir or study.output_dir / "teachers") / key
    tuned = config.model_copy(update={"output_dir": root, "seed": teacher_seed})
    reference = config.teacher.model_copy(update={"name": str(root / "teacher"), "revision": None})
    return TeacherPlan(key=key, config=tuned, reference=reference)


def plan_study(
    study: StudyConfig, folder: str | Path = ".", source: str | None = None
) -> StudyPlan:
    """Every run's validated config, in execution order (task, seed, variant, grid point)."""
    base, base_source = _base_data(study, Path(folder))
    _apply(base, override_list(study.overrides), "overrides", study.name)
    tasks: dict[str | None, list[str]] = (
        {label: override_list(o) for label, o in study.tasks.items()} if study.tasks else {None: []}
    )
    variants: list[VariantConfig | None] = list(study.variants or [None])
    grid_keys = list(study.grid)
    short = _short_keys(grid_keys)
    points = list(itertools.product(*(study.grid[k] for k in grid_keys)))
    runs: list[PlannedRun] = []
    teachers: dict[str, TeacherPlan] = {}
    for label, task_overrides in tasks.items():
        task_data = copy.deepcopy(base)
        _apply(task_data, task_overrides, f"tasks.{label}", study.name)
        for seed in study.seeds:
            for variant in variants:
                data_v = copy.deepcopy(task_data)
                variant_overrides = override_list(variant.overrides) if variant else []
                if variant is not None:
                    _apply(data_v, variant_overrides, f"variant '{variant.name}'", study.name)
                for values in points:
                    data = copy.deepcopy(data_v)
                    grid_overrides = [f"{k}={_value_text(v)}" for k, v in zip(grid_keys, values)]
                    for text, key in zip(grid_overrides, grid_keys):
                        _apply(data, [text], f"grid field '{key}'", study.name)
                    try:
                        pre = ExperimentConfig.model_validate(data)
                    except ValidationError as exc:
                        where = f"study '{study.name}' ({base_source} with " + " ".join(
                            [*task_overrides, *variant_overrides, *grid_overrides]
                        )
                        raise ConfigError(
                            format_validation_error(exc, ExperimentConfig, where + ")")
                        ) from None
                    task_label = label if label is not None else pre.task.name
                    point_parts = [variant.name] if variant else []
                    point_parts += [
                        f"{short[k]}={_value_text(v)}" for k, v in zip(grid_keys, values)
                    ]
                    point = " ".join(point_parts) or "default"
                    run_id = "__".join(
                        _slug(p) for p in [task_label, *point_parts, f"seed{seed}"] if p
                    )
                    teacher = _teacher_plan(
                        pre,
                        study,
                        study.teacher_seed if study.teacher_seed is not None else pre.seed,
                    )
                    teacher = teachers.setdefault(teacher.key, teacher)
                    config = pre.model_copy(
                        update={
                            "seed": seed,
                            "output_dir": study.output_dir / "runs" / run_id,
                            "teacher": teacher.reference,
                            "finetune": None,
                        }
                    )
                    runs.append(
                        PlannedRun(
                            run_id=run_id,
                            task=task_label,
                            variant=variant.name if variant else None,
                            grid=dict(zip(grid_keys, values)),
                            seed=seed,
                            overrides=[*task_overrides, *variant_overrides, *grid_overrides]
                            + [f"seed={seed}"],
                            config=config,
                            teacher=teacher,
                            point=point,
                        )
                    )
    ids = [r.run_id for r in runs]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError(
            f"study '{study.name}': runs would share the folders {twice[:3]}; give the variants, "
            "tasks or grid values distinct names"
        )
    return StudyPlan(study=study, source=source or base_source, runs=runs, teachers=teachers)


def validate_plan(plan: StudyPlan, progress: Callable[[str], None] | None = None) -> None:
    """The pipeline's fail-fast checks (data, labels, shapes, knowledge terms, tokenizers) for
    every run, before any training. Runs are checked against the un-fine-tuned teacher, which
    has the same shape as the fine-tuned one."""
    from kdformer import pipeline
    from kdformer.tasks import DataError

    for run in plan.runs:
        if progress:
            progress(run.run_id)
        tuned = run.teacher.config
        check = run.config
        stages: list[pipeline.Stage] = ["distill"]
        if tuned is not None:
            check = run.config.model_copy(
                update={"teacher": tuned.teacher, "finetune": tuned.finetune}
            )
            stages = ["finetune", "distill"]
        try:
            pipeline.validate(check, stages, plan.task(check))
        except (ConfigError, DataError) as exc:
            raise type(exc)(f"study '{plan.study.name}', run {run.run_id}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    scratch.replace(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _drop_checkpoints(root: Path) -> None:
    """Remove Trainer checkpoint-N folders (weights, optimiser state) but keep the logs."""
    for folder in root.glob("checkpoints/*/checkpoint-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _measure_key(run: PlannedRun) -> str:
    config = run.config
    return _digest(
        {
            "teacher": run.teacher.key,
            "task": config.task.model_dump(mode="json"),
            "report": config.report.model_dump(mode="json"),
        }
    )


class _Measurer:
    """Evaluates and times models; keeps the current teacher loaded for side-by-side timing."""

    def __init__(self, plan: StudyPlan):
        self.plan = plan
        self.path = plan.output_dir / "teachers.json"
        self.teachers: dict[str, Any] = _read_json(self.path) or {}
        self._loaded: tuple[str, Any, Any, Any] | None = None  # (teacher key, model, tok, task)

    def _teacher(self, run: PlannedRun) -> tuple[Any, Any, Any]:
        from kdformer import pipeline
        from kdformer.models import load_tokenizer

        key = run.teacher.key + "|" + _measure_key(run)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None
            task = self.plan.task(run.config)
            model = pipeline.load_teacher(run.teacher.reference, task)
            self._loaded = (key, model, load_tokenizer(run.teacher.reference), task)
        return self._loaded[1], self._loaded[2], self._loaded[3]

    def teacher(self, run: PlannedRun) -> dict[str, Any]:
        """The teacher's metrics and latency (alone), measured once per teacher and task."""
        from kdformer.report import measure_models

        key = _measure_key(run)
        if key not in self.teachers:
            model, tokenizer, task = self._teacher(run)
            reference = run.teacher.reference.name
            path = reference if Path(reference).is_dir() else None
            measured = measure_models(
                [("teacher", model, tokenizer, path)],
                task,
                task.load("eval"),
                run.config.report,
                run.config.distill.train.eval_batch_size,
            )[0].to_dict()
            measured.update(task=run.task, teacher=run.teacher.key, main_metric=task.main_metric)
            self.teachers[key] = measured
            _write_json(self.path, self.teachers)
        return self.teachers[key]

    def student(self, run: PlannedRun) -> dict[str, Any]:
        """Report of teacher vs student: student metrics, both timed round-robin side by side."""
        from kdformer.models import load_model, load_tokenizer
        from kdformer.report import (
            ModelMeasurement,
            build_report,
            evaluate_model,
            measure_latencies,
            resolve_device,
            write_report,
        )

        teacher_info = self.teacher(run)
        teacher, _, task = self._teacher(run)
        report_cfg = run.config.report
        device = resolve_device(report_cfg.device)
        folder = run.folder / "student"
        reference = ModelConfig(name=str(folder))
        student = load_model(reference, task.model_class)
        tokenizer = load_tokenizer(reference)
        eval_raw = task.load("eval")
        metrics = evaluate_model(
            student,
            task,
            task.tokenize(eval_raw, tokenizer),
            tokenizer,
            run.config.distill.train.eval_batch_size,
            device,
            f"evaluate {run.run_id}",
        )
        speeds = measure_latencies(
            [teacher, student],
            report_cfg.latency_batch_size,
            report_cfg.latency_seq_length,
            report_cfg.latency_repeats,
            report_cfg.latency_warmup,
            device,
        )
        measured = [
            ModelMeasurement.of(
                "teacher", teacher, teacher_info["metrics"], speeds[0], teacher_info["path"]
            ),
            ModelMeasurement.of("student", student, metrics, speeds[1], folder),
        ]
        report = build_report(task.name, task.main_metric, len(eval_raw), measured, report_cfg)
        report["latency_setup"]["timing"] = "teacher and student timed round-robin, same process"
        write_report(report, run.folder)
        return report


def _result(run: PlannedRun, report: dict[str, Any], seconds: float) -> dict[str, Any]:
    teacher, student = report["models"]
    return {
        "run_id": run.run_id,
        "task": run.task,
        "task_name": report["task"],
        "point": run.point,
        "variant": run.variant,
        "grid": run.grid,
        "seed": run.seed,
        "overrides": run.overrides,
        "main_metric": report["main_metric"],
        "metrics": student["metrics"],
        "teacher_metrics": teacher["metrics"],
        "retention_pct": student["retention_pct"],
        "parameters": student["parameters"],
        "teacher_parameters": teacher["parameters"],
        "param_ratio": student["param_ratio"],
        "latency_ms": student["latency_ms"],
        "latency_p90_ms": student["latency_p90_ms"],
        "teacher_latency_ms": teacher["latency_ms"],
        "speedup": student["speedup"],
        "throughput": student["throughput"],
        "size_mb": student["size_mb"],
        "shape": student["shape"],
        "teacher": run.teacher.key,
        "eval_examples": report["eval_examples"],
        "latency_setup": report["latency_setup"],
        "train_seconds": round(seconds, 1),
        "config": run.config.model_dump(mode="json"),
    }


def run_status(run: PlannedRun) -> str:
    """finished / changed (finished with a different config) / partial (checkpoints) / pending."""
    if run.finished:
        saved = (_read_json(run.result_path) or {}).get("config")
        try:  # compare without defaults, so a new config field does not flag every run
            same = ExperimentConfig.model_validate(saved).model_dump(
                mode="json", exclude_defaults=True
            ) == run.config.model_dump(mode="json", exclude_defaults=True)
        except ValidationError:
            same = False
        return "finished" if same else "changed"
    if (
        any(run.folder.glob("checkpoints/student/checkpoint-*"))
        or (run.folder / "student").is_dir()
    ):
        return "partial"
    return "pending"


def run_study(
    plan: StudyPlan, callbacks: Sequence[Any] = (), validate: bool = True
) -> list[dict[str, Any]]:
    """Run every unfinished run (fine-tuning each shared teacher first, once), writing the run's
    result.json and refreshing runs.csv, summary.md and the plots after each one. ``validate``:
    check every run first (:func:`validate_plan`; pass False when that was just done)."""
    from tqdm.auto import tqdm

    from kdformer import pipeline
    from kdformer.training import latest_checkpoint

    if validate:
        validate_plan(plan)
    study = plan.study
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    (plan.output_dir / "study.yaml").write_text(
        yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    measurer = _Measurer(plan)
    pending = [r for r in plan.runs if not r.finished]
    write_outputs(plan)
    bar = tqdm(
        total=len(plan.runs),
        initial=len(plan.runs) - len(pending),
        desc=f"study {study.name}",
        unit="run",
        dynamic_ncols=True,
    )
    try:
        for run in pending:
            bar.set_postfix_str(run.run_id)
            bar.write(f"[study {study.name}] run {run.run_id}: {' '.join(run.overrides)}")
            tuned = run.teacher.config
            if tuned is not None and not pipeline.is_finished(tuned.output_dir / "teacher"):
                resume = latest_checkpoint(tuned.output_dir / "checkpoints" / "teacher") is not None
                bar.write(f"[study {study.name}] fine-tuning the shared teacher {run.teacher.key}")
                pipeline.finetune(tuned, resume=resume, callbacks=callbacks, task=plan.task(tuned))
                _write_json(
                    tuned.output_dir / "teacher_key.json",
                    {
                        "task": tuned.task.model_dump(mode="json"),
                        "teacher": tuned.teacher.model_dump(mode="json"),
                        "finetune": tuned.finetune.model_dump(mode="json")
                        if tuned.finetune
                        else None,
                        "seed": tuned.seed,
                    },
                )
                if not study.keep_checkpoints:
                    _drop_checkpoints(tuned.output_dir)
            start = time.perf_counter()
            resume = latest_checkpoint(run.folder / "checkpoints" / "student") is not None
            pipeline.distill(
                run.config, resume=resume, callbacks=callbacks, task=plan.task(run.config)
            )
            seconds = time.perf_counter() - start
            report = measurer.student(run)
            _write_json(run.result_path, _result(run, report, seconds))
            if not study.keep_checkpoints:
                _drop_checkpoints(run.folder)
            write_outputs(plan)
            bar.update(1)
    finally:
        bar.close()
    return collect_results(plan)


# --------------------------------------------------------------------------------------------
# Tables and plots
# --------------------------------------------------------------------------------------------


def collect_results(plan: StudyPlan) -> list[dict[str, Any]]:
    """result.json of every finished run, in plan order."""
    found = []
    for run in plan.runs:
        result = _read_json(run.result_path) if run.finished else None
        if result is not None:
            found.append(result)
    return found


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _pm(values: list[float], digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    mean, std = _mean_std([v * scale for v in values if v is not None])
    if math.isnan(mean):
        return "-"
    text = f"{mean:.{digits}f}"
    if std is not None:
        text += f" ± {std:.{digits}f}"
    return text + suffix


def _params(values: list[float]) -> str:
    """Parameter count in millions (the same for every seed of a point)."""
    if not values:
        return "-"
    millions = statistics.fmean(values) / 1e6
    return f"{millions:.2f}" if millions < 10 else f"{millions:.1f}"


@dataclass
class PointSummary:
    """All seeds of one task x variant x grid point."""

    task: str
    point: str
    variant: str | None
    grid: dict[str, Any]
    results: list[dict[str, Any]]

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.results if r.get(key) is not None]

    def metric(self, name: str) -> list[float]:
        return [r["metrics"][name] for r in self.results if name in r["metrics"]]


def summarise(plan: StudyPlan, results: list[dict[str, Any]]) -> dict[str, list[PointSummary]]:
    """task label -> points (in plan order) with the finished runs of each."""
    by_id = {r["run_id"]: r for r in results}
    tasks: dict[str, dict[str, PointSummary]] = {}
    for run in plan.runs:
        points = tasks.setdefault(run.task, {})
        summary = points.setdefault(
            run.point, PointSummary(run.task, run.point, run.variant, run.grid, [])
        )
        if run.run_id in by_id:
            summary.results.append(by_id[run.run_id])
    return {task: list(points.values()) for task, points in tasks.items()}


def write_runs_csv(plan: StudyPlan, results: list[dict[str, Any]], path: Path) -> None:
    grid_keys = list(plan.study.grid)
    metric_names: list[str] = []
    for r in results:
        metric_names += [m for m in r["metrics"] if m not in metric_names]
    header = [
        "run_id",
        "task",
        "variant",
        *grid_keys,
        "seed",
        "main_metric",
        *metric_names,
        *[f"teacher_{m}" for m in metric_names],
        "retention_pct",
        "parameters",
        "teacher_parameters",
        "latency_ms",
        "teacher_latency_ms",
        "speedup",
        "layers",
        "hidden",
        "train_seconds",
        "overrides",
    ]
    scratch = path.with_name(path.name + ".tmp")
    with scratch.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            writer.writerow(
                [
                    r["run_id"],
                    r["task"],
                    r["variant"] or "",
                    *[_value_text(r["grid"].get(k)) for k in grid_keys],
                    r["seed"],
                    r["main_metric"],
                    *[r["metrics"].get(m, "") for m in metric_names],
                    *[r["teacher_metrics"].get(m, "") for m in metric_names],
                    r["retention_pct"],
                    r["parameters"],
                    r["teacher_parameters"],
                    r["latency_ms"],
                    r["teacher_latency_ms"],
                    r["speedup"],
                    r["shape"].get("layers"),
                    r["shape"].get("hidden"),
                    r.get("train_seconds"),
                    " ".join(r["overrides"]),
                ]
            )
    scratch.replace(path)


def summary_markdown(plan: StudyPlan, results: list[dict[str, Any]]) -> str:
    study = plan.study
    grid_keys = list(study.grid)
    short = _short_keys(grid_keys)
    teachers = _read_json(plan.output_dir / "teachers.json") or {}
    done = len(results)
    lines = [f"# Study: {study.name}", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += [
        f"{done} of {len(plan.runs)} runs finished; seeds {', '.join(map(str, study.seeds))}. "
        "Metrics x100 and retention (% of the teacher's main metric) as mean ± std over the "
        "finished seeds (n); std needs n >= 2.",
        "",
    ]
    setup = next((r["latency_setup"] for r in results), None)
    if setup:
        lines += [
            f"Latency: median ms per forward pass of a {setup['batch_size']} x "
            f"{setup['seq_length']} batch on {setup['device']} ({setup['torch_threads']} torch "
            "threads). Each student is timed round-robin with its teacher in the same process; "
            "speed-up = teacher ms / student ms of that same measurement.",
            "",
        ]
    for task, points in summarise(plan, results).items():
        task_results = [r for p in points for r in p.results]
        metric_names: list[str] = []
        for r in task_results:
            metric_names += [m for m in r["metrics"] if m not in metric_names]
        main = task_results[0]["main_metric"] if task_results else ""
        lines += [f"## {task}" + (f" (main metric: {main})" if main else ""), ""]
        keys = dict.fromkeys(_measure_key(r) for r in plan.runs if r.task == task)
        measured = [teachers[k] for k in keys if k in teachers]
        for t in measured:
            scores = ", ".join(f"{m} {100 * v:.1f}" for m, v in t["metrics"].items())
            lines.append(
                f"Teacher `{t['teacher']}`: {scores}; {t['parameters'] / 1e6:.1f}M params; "
                f"{t['latency_ms']:.1f} ms/batch (timed alone)."
            )
        if measured:
            lines.append("")
        dims = (["variant"] if study.variants else []) + [short[k] for k in grid_keys]
        header = [
            *(dims or ["run"]),
            "n",
            *metric_names,
            "retention %",
            "params M",
            "student ms",
            "teacher ms",
            "speed-up",
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for p in points:
            cells = ([p.variant or ""] if study.variants else []) + [
                _value_text(p.grid[k]) for k in grid_keys
            ]
            cells = cells or [p.point]
            lines.append(
                "| "
                + " | ".join(
                    [
                        *cells,
                        str(len(p.results)),
                        *[_pm(p.metric(m), 1, 100) for m in metric_names],
                        _pm(p.values("retention_pct"), 1),
                        _params(p.values("parameters")),
                        _pm(p.values("latency_ms"), 1),
                        _pm(p.values("teacher_latency_ms"), 1),
                        _pm(p.values("speedup"), 2, suffix="x"),
                    ]
                )
                + " |"
            )
        lines.append("")
    lines += [
        "Per-run figures: runs.csv and runs/<run-id>/result.json (with each run's overrides).",
        "",
    ]
    return "\n".join(lines)


def _bar_values(p: PointSummary, y: str) -> list[float]:
    if y == "retention":
        return p.values("retention_pct")
    return [100 * r["metrics"][r["main_metric"]] for r in p.results]


def plot_bars(plan: StudyPlan, results: list[dict[str, Any]], path: Path) -> bool:
    """One panel per task; bars with error bars (std over seeds); grouped when plot.x is set."""
    from matplotlib.figure import Figure

    study = plan.study
    tasks = summarise(plan, results)
    if not any(p.results for points in tasks.values() for p in points):
        return False
    x_dim = study.plot.x
    short = _short_keys(list(study.grid))
    fig = Figure(
        figsize=(max(6.0, 1.1 + 0.9 * max(len(p) for p in tasks.values())) * len(tasks), 4.8)
    )
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, (task, points) in zip(axes, tasks.items()):

        def x_value(p: PointSummary) -> str:
            if x_dim == "variant":
                return p.variant or ""
            return _value_text(p.grid[x_dim]) if x_dim else p.point

        def series(p: PointSummary) -> str:
            parts = [p.variant] if p.variant and x_dim != "variant" else []
            parts += [f"{short[k]}={_value_text(v)}" for k, v in p.grid.items() if k != x_dim]
            return " ".join(parts) if x_dim else ""

        xs = list(dict.fromkeys(x_value(p) for p in points))
        names = list(dict.fromkeys(series(p) for p in points))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            chosen = [p for p in points if series(p) == name]
            positions, heights, errors = [], [], []
            for p in chosen:
                mean, std = _mean_std(_bar_values(p, study.plot.y))
                positions.append(xs.index(x_value(p)) - 0.4 + width * (i + 0.5))
                heights.append(0 if math.isnan(mean) else mean)
                errors.append(std or 0)
            ax.bar(positions, heights, width, yerr=errors, capsize=3, label=name or None)
        main = next((r["main_metric"] for p in points for r in p.results), "metric")
        if study.plot.y == "retention":
            ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="teacher")
            ax.set_ylabel("retention (% of teacher)")
        else:
            teacher = [r["teacher_metrics"][main] for p in points for r in p.results]
            if teacher:
                ax.axhline(100 * statistics.fmean(teacher), color="grey", linestyle="--")
            ax.set_ylabel(f"{main} x100")
        heights_all = [v for p in points for v in _bar_values(p, study.plot.y)]
        if heights_all:
            low = min(heights_all)
            ax.set_ylim(max(0.0, low - 0.15 * (max(heights_all + [100]) - low) - 5), None)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(short.get(x_dim, x_dim) if x_dim else "")
        ax.set_title(f"{study.name}: {task}")
        if x_dim or study.plot.y == "retention":
            ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_scatter(plan: StudyPlan, results: list[dict[str, Any]], path: Path) -> bool:
    """Retention vs speed-up, one panel per task, one marker per variant/grid point (error bars:
    std over seeds), joined in speed-up order; the teacher is the star at (1, 100)."""
    from matplotlib.figure import Figure

    tasks = summarise(plan, results)
    panels = []
    for task, points in tasks.items():
        found = []
        for p in points:
            (sx, ex), (sy, ey) = (
                _mean_std(p.values("speedup")),
                _mean_std(p.values("retention_pct")),
            )
            if not (math.isnan(sx) or math.isnan(sy)):
                found.append((sx, sy, ex or 0.0, ey or 0.0, p.point))
        if found:
            panels.append((task, sorted(found)))
    if not panels:
        return False
    fig = Figure(figsize=(5.5 * len(panels), 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (task, found) in zip(axes, panels):
        xs, ys, xe, ye, labels = zip(*found)
        ax.errorbar(xs, ys, xerr=xe, yerr=ye, fmt="o-", capsize=3, linewidth=1, label="students")
        for x, y, text in zip(xs, ys, labels):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
        ax.plot(
            [1], [100], marker="*", markersize=12, color="black", linestyle="none", label="teacher"
        )
        ax.set_xlabel("speed-up vs teacher (latency ratio, x)")
        ax.set_ylabel("retention (% of teacher's main metric)")
        ax.set_title(f"{plan.study.name}: {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_outputs(plan: StudyPlan) -> list[Path]:
    """runs.csv, summary.md and the plots from the finished runs so far."""
    out = plan.output_dir
    out.mkdir(parents=True, exist_ok=True)
    results = collect_results(plan)
    written = [out / "runs.csv", out / "summary.md"]
    write_runs_csv(plan, results, written[0])
    scratch = out / "summary.md.tmp"
    scratch.write_text(summary_markdown(plan, results), encoding="utf-8")
    scratch.replace(written[1])
    if plot_bars(plan, results, out / "bars.png"):
        written.append(out / "bars.png")
    if plan.study.plot.scatter and plot_scatter(plan, results, out / "retention_vs_speedup.png"):
        written.append(out / "retention_vs_speedup.png")
    return written


def describe_plan(plan: StudyPlan) -> list[tuple[str, str, str]]:
    """(run id, status, overrides) for every run, for --dry-run."""
    return [(r.run_id, run_status(r), " ".join(r.overrides)) for r in plan.runs]


def plan_lines(plan: StudyPlan) -> list[str]:
    """What --dry-run prints: each run with its status and overrides, the teachers, a count."""
    rows = describe_plan(plan)
    lines = [f"study {plan.study.name} ({plan.source}): status, run id, overrides"]
    lines += [f"{status:<9} {run_id}  {overrides}" for run_id, status, overrides in rows]
    for teacher in plan.teachers.values():
        state = "given, used as is"
        if teacher.root is not None:
            done = (teacher.root / "teacher" / "config.json").is_file()
            state = "fine-tuned" if done else "to fine-tune"
        lines.append(f"teacher {teacher.key}: {state} ({teacher.reference.name})")
    finished = sum(1 for _, status, _ in rows if status == "finished")
    changed = sum(1 for _, status, _ in rows if status == "changed")
    text = f"{len(rows)} runs: {finished} finished, {len(rows) - finished - changed} to run"
    if changed:
        text += f", {changed} finished with a different config (kept; delete to redo)"
    lines.append(f"{text}; outputs in {plan.output_dir}")
    return lines
