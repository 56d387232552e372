"""The plan of a study: every run's config, its shared teacher and its folder, validated before
anything trains; and each run's status (finished / changed / partial / pending)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdformer import pipeline
from kdformer.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    apply_overrides,
)
from kdformer.config.loading import read_run_config
from kdformer.config.messages import format_validation_error
from kdformer.config.study import (
    StudyConfig,
    VariantConfig,
    override_list,
    short_keys,
    value_text,
)
from kdformer.tasks import DataError, build_task

RESULT_FILE = "result.json"


def digest(payload: Any) -> str:
    """A short, stable hash of JSON-able settings (teacher folders, shared measurements)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write through a scratch file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    scratch.replace(path)


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
    published: Path | None = None  # <results_dir>/runs/<run-id>.json when the study keeps one

    @property
    def folder(self) -> Path:
        return self.config.output_dir

    @property
    def result_path(self) -> Path:
        return self.folder / RESULT_FILE

    @property
    def result_file(self) -> Path:
        """Where this run's result is read from: its own folder, else the study's results_dir."""
        if self.result_path.is_file() or self.published is None:
            return self.result_path
        return self.published

    @property
    def finished(self) -> bool:
        return self.result_file.is_file()

    @property
    def measure_key(self) -> str:
        """Runs with the same key share the teacher's measurement (same teacher, data, timing)."""
        return digest(
            {
                "teacher": self.teacher.key,
                "task": self.config.task.model_dump(mode="json"),
                "report": self.config.report.model_dump(mode="json"),
            }
        )


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
        """The Task for a config's task section and seed, built once, so runs sharing data
        share its splits (a Task reads each split once)."""

        key = digest([config.task.model_dump(mode="json"), config.seed])
        if key not in self._tasks:
            self._tasks[key] = build_task(config.task, config.seed)
        return self._tasks[key]


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
        data = read_run_config(path, "for a base of the defaults only, write base: {}")
    except ConfigError as exc:
        raise ConfigError(f"study '{study.name}', base: {exc}") from None
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
    key = f"{_slug(config.task.name)}-{digest(payload)}"
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
    short = short_keys(grid_keys)
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
                    grid_overrides = [f"{k}={value_text(v)}" for k, v in zip(grid_keys, values)]
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
                        f"{short[k]}={value_text(v)}" for k, v in zip(grid_keys, values)
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
                            published=study.results_dir / "runs" / f"{run_id}.json"
                            if study.results_dir is not None
                            else None,
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


def read_teachers(plan: StudyPlan) -> dict[str, Any]:
    """The teachers' measurements (teachers.json) of the study's output_dir, else of its
    results_dir (a new session, whose output_dir starts empty)."""
    found = read_json(plan.output_dir / "teachers.json")
    if found is None and plan.study.results_dir is not None:
        found = read_json(plan.study.results_dir / "teachers.json")
    return found or {}


def run_status(run: PlannedRun) -> str:
    """finished / changed (finished with a different config) / partial (checkpoints) / pending."""
    if run.finished:
        saved = (read_json(run.result_file) or {}).get("config")
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
