"""The workflows behind the CLI: fine-tune a teacher, distill a student, evaluate both.

Layout of ``output_dir``::

    config.yaml             the resolved config of the last run
    teacher/                fine-tuned teacher (only when `finetune:` is set)
    teacher_eval.json       the teacher's metrics and the task's trivial baseline (the check
                            that the teacher learnt something, reused by the report)
    general/                two-stage runs: the task-agnostic stage (its own student/, ...)
    student/                distilled student + tokenizer + README.md model card + report
    one_stage/              two-stage runs: the one-stage student at the same compute
    checkpoints/<stage>/    resumable Trainer checkpoints (and TensorBoard logs under runs/)
    report.json, report.md  teacher vs student(s)

Safety rules: everything that can be checked cheaply (config, data files, labels, lengths,
model shapes, tokenizers) is checked before any training starts; a teacher that does not beat
the task's trivial baseline stops distillation before it starts; a finished ``teacher/`` or
``student/`` is skipped unless ``overwrite``, and even then is replaced only once the new one
is saved; a run whose loss or weights become non-finite stops with its last good checkpoint
kept and nothing saved or scored; leftover checkpoints of an interrupted run are never
silently discarded.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import transformers
from rich.console import Console

from kdformer.config import (
    ConfigError,
    DistillConfig,
    ExperimentConfig,
    ModelConfig,
    ReportConfig,
    TrainConfig,
    dump_config,
)
from kdformer.models import check_same_tokenizer, load_model, load_tokenizer
from kdformer.models import load_config as load_model_config
from kdformer.objective import DistillationObjective
from kdformer.report import build_report, measure_loaded, print_report, write_report
from kdformer.report.card import write_model_card
from kdformer.report.render import teacher_gain_is_clear
from kdformer.students import build_student, student_config
from kdformer.tasks import DataError, Task, TaskSection, build_task
from kdformer.teacher import LiveTeacher
from kdformer.training import (
    DistillationModel,
    DistillationTrainer,
    TaskTrainer,
    TrainingDiverged,
    latest_checkpoint,
    non_finite_parameters,
    training_arguments,
)

console = Console(stderr=True)
Stage = Literal["finetune", "general", "distill", "evaluate"]
STAGES: tuple[Stage, ...] = ("finetune", "general", "distill", "evaluate")


@dataclass
class Paths:
    root: Path

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    @property
    def student(self) -> Path:
        return self.root / "student"

    @property
    def general(self) -> Path:
        """The task-agnostic stage's own output folder (two-stage runs)."""
        return self.root / "general"

    @property
    def one_stage(self) -> Path:
        """The one-stage comparison's own output folder (two-stage runs)."""
        return self.root / "one_stage"

    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage


def is_finished(model_dir: Path) -> bool:
    """A saved model: its config and safetensors weights whose header reads."""
    if not (model_dir / "config.json").is_file():
        return False
    weights = list(model_dir.glob("*.safetensors"))
    if not weights:
        return False
    from safetensors import safe_open

    try:
        for path in weights:
            with safe_open(str(path), "pt") as handle:
                handle.keys()
    except Exception:  # truncated or not safetensors at all
        return False
    return True


def teacher_reference(config: ExperimentConfig) -> ModelConfig:
    """The task-trained teacher: the fine-tuned one when `finetune:` is set, else `teacher`."""
    if config.finetune is None:
        return config.teacher
    return config.teacher.model_copy(update={"name": str(Paths(config.output_dir).teacher)})


# ------------------------------------------------------------------------------------------
# Two-stage distillation: the configs of its parts
# ------------------------------------------------------------------------------------------


def general_config(config: ExperimentConfig) -> ExperimentConfig:
    """Stage one: the general section's raw text, knowledge and training, from the teacher as
    given (before task fine-tuning), into ``<output_dir>/general``."""
    general = config.general
    assert general is not None
    return config.model_copy(
        update={
            "output_dir": Paths(config.output_dir).general,
            "task": general.task,
            "finetune": None,
            "general": None,
            "distill": DistillConfig(**general.model_dump(include=set(DistillConfig.model_fields))),
        }
    )


def task_stage_config(config: ExperimentConfig) -> ExperimentConfig:
    """The task stage: with a general section, the student starts from the general student."""
    if config.general is None:
        return config
    general_student = Paths(config.output_dir).general / "student"
    student = config.student.model_copy(
        update={"init": "pretrained", "pretrained": str(general_student)}
    )
    return config.model_copy(update={"student": student})


def one_stage_config(config: ExperimentConfig, steps: int) -> ExperimentConfig:
    """The comparison: the task stage alone from the configured initialisation, ``steps``
    steps, into ``<output_dir>/one_stage`` (same fine-tuned teacher)."""
    train = config.distill.train.model_copy(update={"max_steps": steps})
    return config.model_copy(
        update={
            "output_dir": Paths(config.output_dir).one_stage,
            "teacher": teacher_reference(config),
            "finetune": None,
            "general": None,
            "distill": config.distill.model_copy(update={"train": train}),
        }
    )


def matched_steps(general_dir: Path, task_dir: Path) -> dict[str, Any]:
    """Optimiser steps for the one-stage student so that it processes as many (padded) tokens
    as the general and the task stage together, from what both stages counted."""
    general = json.loads((general_dir / "training.json").read_text(encoding="utf-8"))
    task = json.loads((task_dir / "training.json").read_text(encoding="utf-8"))
    per_step = task["tokens"] / max(1, task["steps"])
    steps = task["steps"] + math.ceil(general["tokens"] / max(1.0, per_step))
    return {
        "general_tokens": general["tokens"],
        "general_steps": general["steps"],
        "task_tokens": task["tokens"],
        "task_steps": task["steps"],
        "task_tokens_per_step": per_step,
        "one_stage_steps": steps,
    }


# ------------------------------------------------------------------------------------------
# Checks before work
# ------------------------------------------------------------------------------------------


def _check_distill_setup(config: ExperimentConfig, task: Task, teacher_config: Any) -> None:
    """The student's shape or starting model, and the objective, against the teacher."""
    if config.student.init == "pretrained":
        if not config.student.pretrained:
            raise ConfigError("student.init: pretrained needs student.pretrained")
        if config.general is None or Path(config.student.pretrained).exists():
            student_cfg = load_model_config(config.student.pretrained)
            check_same_tokenizer(
                load_tokenizer(config.teacher), load_tokenizer(config.student.pretrained)
            )
        else:  # the general stage writes it
            student_cfg = student_config(
                teacher_config, config.student.model_copy(update={"init": "teacher"})
            )
    else:
        student_cfg = student_config(teacher_config, config.student)
    DistillationObjective(
        config.distill.knowledge,
        teacher_config,
        student_cfg,
        task.outputs,
        config.distill.hard_label_weight,
        hard_label_weight_end=config.distill.hard_label_weight_end,
    )


def validate(config: ExperimentConfig, stages: Sequence[Stage], task: Task | None = None) -> Task:
    """Fail fast: data, labels, lengths, model shapes, knowledge terms and tokenizers, before
    training. ``task``: reuse one built from ``config.task`` and ``config.seed`` (studies share
    them)."""
    task = task or build_task(config.task, config.seed)
    if "finetune" in stages and config.finetune is None:
        raise ConfigError(
            "the finetune stage needs a `finetune:` section (training settings for the teacher)"
        )
    if "finetune" in stages and task.finetune_refusal:
        raise ConfigError(task.finetune_refusal)
    if "general" in stages and config.general is None:
        raise ConfigError("the general stage needs a `general:` section (raw text and training)")
    teacher_config = load_model_config(config.teacher)
    task.adapt_to_teacher(teacher_config)
    task.check_lengths(teacher_config, config.teacher.name)
    if {"finetune", "distill"} & set(stages):
        task.load("train")
    task.load("eval")
    if "general" in stages:
        stage_one = general_config(config)
        general_task = build_task(stage_one.task, config.seed)
        general_task.adapt_to_teacher(teacher_config)
        general_task.check_lengths(teacher_config, config.teacher.name)
        general_task.load("train")
        general_task.load("eval")
        _check_distill_setup(stage_one, general_task, teacher_config)
    if "distill" in stages:
        _check_distill_setup(task_stage_config(config), task, teacher_config)
        if (
            "finetune" not in stages
            and config.finetune is not None
            and not is_finished(Paths(config.output_dir).teacher)
        ):
            raise ConfigError(
                f"distill needs the fine-tuned teacher in {Paths(config.output_dir).teacher}, which "
                "does not exist yet: run `kdformer finetune` first, or `kdformer run` for both"
            )
        if (
            config.general is not None
            and "general" not in stages
            and not is_finished(Paths(config.output_dir).general / "student")
        ):
            raise ConfigError(
                f"the task stage starts from the general student in "
                f"{Paths(config.output_dir).general / 'student'}, which does not exist yet: run "
                "`kdformer run CONFIG --stages general` first, or `kdformer run` for all stages"
            )
    return task


def _start_mode(final: Path, checkpoints: Path, overwrite: bool, resume: bool) -> str:
    """'skip' a finished stage, 'resume' from a checkpoint, or start 'fresh'."""
    if is_finished(final) and not overwrite:
        return "skip"
    last = latest_checkpoint(checkpoints)
    if resume:
        if last is None:
            console.print(f"[yellow]no checkpoint in {checkpoints}; starting from scratch[/]")
            return "fresh"
        return "resume"
    if last is not None:
        if not overwrite:
            raise ConfigError(
                f"{checkpoints} holds {last.name} from an unfinished run: pass --resume to continue "
                "from it, or --overwrite to start over"
            )
        shutil.rmtree(checkpoints)
    return "fresh"


def save_atomically(save: Callable[[Path], None], final: Path) -> None:
    """Write into a scratch folder, then swap it in, so a finished model is never half-replaced."""
    partial = final.with_name(final.name + ".partial")
    previous = final.with_name(final.name + ".previous")
    shutil.rmtree(partial, ignore_errors=True)
    save(partial)
    if final.exists():
        shutil.rmtree(previous, ignore_errors=True)
        final.rename(previous)
    partial.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def _write_config(config: ExperimentConfig) -> None:
    config.output_dir.mkdir(parents=True, exist_ok=True)
    (config.output_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")


# ------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------


def _train(
    trainer_class: type[TaskTrainer],
    model: Any,
    config: ExperimentConfig,
    train: TrainConfig,
    checkpoints: Path,
    task: Task,
    tokenizer: Any,
    train_features: Any,
    callbacks: Sequence[Any],
    mode: str,
    setting: str,
) -> TaskTrainer:
    """Train with the library's Trainer (a task-aware subclass), resuming from the last
    checkpoint. ``setting``: the config section of the training settings (for messages)."""
    eval_examples = task.load("eval")
    args = training_arguments(train, checkpoints, config.seed, True, list(task.label_keys))
    args.include_num_input_tokens_seen = "all"
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_features,
        eval_dataset=eval_examples,
        data_collator=task.collator(tokenizer, "train"),
        processing_class=tokenizer,
        callbacks=list(callbacks),
        task=task,
        eval_examples=eval_examples,
        eval_features=task.tokenize(eval_examples, tokenizer, "eval") if train.eval_steps else None,
    )
    last = latest_checkpoint(checkpoints) if mode == "resume" else None
    try:
        trainer.train(resume_from_checkpoint=str(last) if last else None)
    except TrainingDiverged as exc:
        good = latest_checkpoint(checkpoints)
        kept = (
            f"The last good checkpoint is {good}, kept for inspection."
            if good
            else "No checkpoint had been written yet."
        )
        raise TrainingDiverged(
            f"training diverged: {exc}. Nothing was saved or scored. {kept} Lower "
            f"{setting}.learning_rate (now {train.learning_rate:g}), or check max_grad_norm, "
            "the data and the mixed-precision setting, then rerun with --overwrite (--resume "
            "would restore the optimiser state that diverged)."
        ) from None
    return trainer


def _save_model(model: Any, tokenizer: Any, config: ExperimentConfig, folder: Path) -> None:
    """Weights (safetensors), tokenizer and the config that made them, loadable with plain
    ``from_pretrained``. Refuses non-finite weights."""
    bad = non_finite_parameters(model)
    if bad:
        raise TrainingDiverged(
            f"the trained model has non-finite weights (e.g. {bad}); it was not saved. Lower the "
            "learning rate and train again"
        )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "kdformer_config.yaml").write_text(dump_config(config), encoding="utf-8")


def _write_training_record(trainer: TaskTrainer, folder: Path) -> None:
    """What the training cost: optimiser steps and (padded) input tokens processed."""
    state = trainer.state
    record = {
        "steps": state.global_step,
        "tokens": int(state.num_input_tokens_seen or 0),
        "epochs": state.epoch,
    }
    (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def finetune(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    task: Task | None = None,
) -> Path:
    """Fine-tune ``config.teacher`` on the task into ``<output_dir>/teacher``."""
    paths = Paths(config.output_dir)
    task = task or validate(config, ["finetune"])
    assert config.finetune is not None
    mode = _start_mode(paths.teacher, paths.checkpoints("teacher"), overwrite, resume)
    if mode == "skip":
        console.print(
            f"teacher already fine-tuned in {paths.teacher}; skipping (--overwrite redoes it)"
        )
        return paths.teacher
    _write_config(config)
    transformers.set_seed(config.seed)
    tokenizer = load_tokenizer(config.teacher)
    # A head of another task or size (a checkpoint fine-tuned elsewhere) is replaced.
    model = load_model(
        config.teacher, task.model_class, ignore_mismatched_sizes=True, **task.head_kwargs()
    )
    task.align_model(model)
    train_features = task.tokenize(task.load("train"), tokenizer, "train")
    console.print(
        f"[bold]fine-tuning teacher[/] {config.teacher.name} on {task.describe_data()} "
        f"({len(train_features)} training inputs)"
    )
    trainer = _train(
        TaskTrainer,
        model,
        config,
        config.finetune,
        paths.checkpoints("teacher"),
        task,
        tokenizer,
        train_features,
        callbacks,
        mode,
        "finetune",
    )

    def save(folder: Path) -> None:
        _save_model(model, tokenizer, config, folder)
        _write_training_record(trainer, folder)

    save_atomically(save, paths.teacher)
    console.print(f"teacher saved to {paths.teacher}")
    return paths.teacher


def head_missing_keys(model: Any, info: dict[str, Any]) -> list[str]:
    """Weights the checkpoint lacked outside the base model: the task head was never trained.
    (A missing pooler, part of the base model, does not count; a bare encoder has no head.)"""
    if getattr(model, "base_model", None) is model:
        return []
    prefix = getattr(model, "base_model_prefix", "") + "."
    return sorted(k for k in info.get("missing_keys", []) if not k.startswith(prefix))


def load_teacher(reference: ModelConfig, task: Task) -> Any:
    """Load a task-trained teacher, refusing one whose task head is untrained; its outputs are
    put in the task's label order."""
    model, info = load_model(reference, task.model_class, output_loading_info=True)
    missing = head_missing_keys(model, info)
    if missing:
        raise ConfigError(
            f"teacher '{reference.name}' has no trained task head (its checkpoint lacks the "
            f"{type(model).__name__} weights {missing[:6]}). Fine-tune it on the task first: "
            "add a `finetune:` section to the config" + task.missing_head_hint()
        )
    task.check_model(model.config)
    task.align_model(model)
    return model


def _teacher_fingerprint(reference: ModelConfig, task_config: TaskSection) -> str:
    """Identifies a teacher evaluation: the model (its files' sizes and times, or hub name)
    and the task section."""
    from kdformer.models import resolve_name

    source = Path(resolve_name(reference.name))
    files: Any = str(reference.name)
    if source.is_dir():
        files = sorted(
            (p.name, p.stat().st_size, int(p.stat().st_mtime))
            for p in source.iterdir()
            if p.suffix in (".safetensors", ".json")
        )
    payload = {
        "model": files,
        "revision": reference.revision,
        "task": task_config.model_dump(mode="json"),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_teacher(
    config: ExperimentConfig, task: Task, teacher: Any, tokenizer: Any
) -> dict[str, Any] | None:
    """The teacher's metrics on the evaluation set and the task's trivial baseline, measured
    once per teacher and task (``teacher_eval.json`` in ``output_dir``). None when the task
    has no baseline to compare with (raw text)."""
    from kdformer.report.measure import evaluate_model, resolve_device

    reference = teacher_reference(config)
    key = _teacher_fingerprint(reference, config.task)
    path = config.output_dir / "teacher_eval.json"
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == key:
            return stored
    baseline = task.baseline(task.load("train"), task.load("eval"))
    if baseline is None:
        return None
    metrics = evaluate_model(
        teacher,
        task,
        task.load("eval"),
        tokenizer,
        config.distill.train.eval_batch_size,
        resolve_device(config.report.device),
        "evaluate teacher",
    )
    result = {
        "fingerprint": key,
        "teacher": reference.name,
        "main_metric": task.main_metric,
        "metrics": metrics,
        "baseline": baseline,
        "baseline_name": task.baseline_name,
    }
    config.output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def check_teacher(config: ExperimentConfig, task: Task, measured: dict[str, Any] | None) -> None:
    """Stop when the teacher does not beat the trivial baseline by ``report.min_teacher_gain``
    of the headroom (retention would be meaningless), unless ``distill.allow_weak_teacher``."""
    if measured is None or task.main_metric is None or not task.higher_is_better:
        return
    main = task.main_metric
    value, floor = measured["metrics"].get(main), (measured["baseline"] or {}).get(main)
    if value is None or floor is None:
        return
    share = config.report.min_teacher_gain
    if teacher_gain_is_clear(value, floor, share):
        return
    message = (
        f"the teacher scores {100 * value:.2f} {main} on the evaluation set, and always "
        f"predicting the {task.baseline_name} scores {100 * floor:.2f}: it does not close "
        f"{share:.0%} of the gap to a perfect score (it would need "
        f"{100 * (floor + share * (1 - floor)):.2f}), so it has learnt too little to distil and "
        "a student's retention would be meaningless."
    )
    if config.distill.allow_weak_teacher:
        console.print(f"[yellow]warning: {message} Distilling anyway (allow_weak_teacher).[/]")
        return
    fix = (
        "Fine-tune it longer or on more data (finetune.epochs, task.max_train_samples, "
        "finetune.learning_rate)"
        if config.finetune is not None
        else "Use a teacher trained for this task, or add a `finetune:` section"
    )
    raise ConfigError(
        f"{message} {fix}; or pass --allow-weak-teacher (distill.allow_weak_teacher: true) to "
        "distil anyway."
    )


def distill(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    task: Task | None = None,
    teacher_eval: dict[str, Any] | None = None,
) -> Path:
    """Distill the task-trained teacher into a student saved in ``<output_dir>/student``.
    ``teacher_eval``: the teacher's measurement when the caller has it (studies)."""
    config = task_stage_config(config)
    paths = Paths(config.output_dir)
    task = task or validate(config, ["distill"])
    mode = _start_mode(paths.student, paths.checkpoints("student"), overwrite, resume)
    if mode == "skip":
        console.print(
            f"student already distilled in {paths.student}; skipping (--overwrite redoes it)"
        )
        return paths.student
    _write_config(config)
    transformers.set_seed(config.seed)
    reference = teacher_reference(config)
    teacher = load_teacher(reference, task)
    tokenizer = load_tokenizer(reference)
    check_teacher(config, task, teacher_eval or evaluate_teacher(config, task, teacher, tokenizer))
    train_features = task.tokenize(task.distillation_examples(), tokenizer, "train")
    importance_data = None
    if config.student.init == "pruned":  # importance from the teacher's task loss on train data
        from kdformer.pruning import importance_batches

        if not task.label_keys:
            raise ConfigError(
                "init: pruned scores importance with the task loss, and this task has no gold "
                "labels (raw text without an MLM head): use init: teacher"
            )
        importance_data = importance_batches(
            task.tokenize(task.load("train"), tokenizer, "train"),  # gold labels only
            task.collator(tokenizer, "train"),
            config.distill.train.batch_size,
            config.seed,
        )
    student = build_student(
        teacher,
        config.student,
        task.model_class,
        config.seed,
        data=importance_data,
        label_keys=task.label_keys,
    )
    if config.student.init == "pretrained":
        task.align_model(student)
    objective = DistillationObjective(
        config.distill.knowledge,
        teacher.config,
        student.config,
        task.outputs,
        config.distill.hard_label_weight,
        hard_label_weight_end=config.distill.hard_label_weight_end,
    )
    teacher_signal = LiveTeacher(teacher, objective.needs_for("teacher"))
    model = DistillationModel(student, objective, teacher_signal)
    terms = ", ".join(f"{n} x{t.config.weight}" for n, t in objective.terms.items())
    hard = (
        f"hard labels x{config.distill.hard_label_weight}"
        if objective.uses_hard_labels
        else "no hard labels"
    )
    console.print(
        f"[bold]distilling[/] {reference.name} ({teacher.config.num_hidden_layers} layers) -> student "
        f"({student.config.num_hidden_layers} x {student.config.hidden_size}, init {config.student.init}) "
        f"on {task.describe_data()}; knowledge: {terms or 'none'}; {hard}"
    )
    trainer = _train(
        DistillationTrainer,
        model,
        config,
        config.distill.train,
        paths.checkpoints("student"),
        task,
        tokenizer,
        train_features,
        callbacks,
        mode,
        "distill.train",
    )
    held_out = trainer.held_out_objective() if not task.outputs else None

    def save(folder: Path) -> None:
        _save_model(student, tokenizer, config, folder)
        _write_training_record(trainer, folder)
        if held_out is not None:
            (folder / "held_out.json").write_text(
                json.dumps(held_out, indent=2) + "\n", encoding="utf-8"
            )
        write_model_card(
            folder, dump_config(config), reference.name, None, task.model_class.__name__
        )

    save_atomically(save, paths.student)
    console.print(f"student saved to {paths.student}")
    return paths.student


def measure_models(
    models: Sequence[tuple[str, str | Path]],
    task_config: TaskSection,
    report: ReportConfig,
    seed: int = 42,
    eval_batch_size: int = 128,
    trust_remote_code: bool = False,
    task: Task | None = None,
    known: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Evaluate and time each (name, model folder or hub name) side by side on the eval set.
    ``known``: metrics already measured for some names (the teacher's, from its check)."""
    task = task or build_task(task_config, seed)
    if models:
        first = ModelConfig(name=str(models[0][1]), trust_remote_code=trust_remote_code)
        task.adapt_to_teacher(load_model_config(first))
    eval_raw = task.load("eval")
    loaded = []
    for name, source in models:
        reference = ModelConfig(name=str(source), trust_remote_code=trust_remote_code)
        model, info = load_model(reference, task.model_class, output_loading_info=True)
        missing = head_missing_keys(model, info)
        if missing:
            raise ConfigError(
                f"model '{source}' has no trained task head (its checkpoint lacks the "
                f"{type(model).__name__} weights {missing[:6]}); its scores would be those of random weights. Evaluate a model "
                "trained for this task"
            )
        task.check_model(model.config)
        task.align_model(model)
        path = source if Path(str(source)).is_dir() else None
        loaded.append((name, model, load_tokenizer(reference), path))
    measurements = measure_loaded(loaded, task, eval_raw, report, eval_batch_size, known)
    try:
        baseline = task.baseline(task.load("train"), eval_raw)
    except DataError:  # an evaluation-only setup may have no training split
        baseline = None
    return build_report(
        task.name,
        task.main_metric,
        len(eval_raw),
        measurements,
        report,
        baseline=baseline,
        baseline_name=task.baseline_name,
        higher_is_better=task.higher_is_better,
        columns=list(task.table_metrics) if task.table_metrics else None,
    )


def evaluate(config: ExperimentConfig, task: Task | None = None) -> dict[str, Any]:
    """Teacher vs student (and, for two-stage runs, the one-stage student) report; written next
    to the student and printed."""
    paths = Paths(config.output_dir)
    if not is_finished(paths.student):
        raise ConfigError(f"no distilled student in {paths.student}: run `kdformer distill` first")
    task = task or build_task(config.task, config.seed)
    two_stage = is_finished(paths.one_stage / "student")
    models: list[tuple[str, str | Path]] = [
        ("teacher", teacher_reference(config).name),
        ("two-stage student" if two_stage else "student", paths.student),
    ]
    if two_stage:
        models.append(("one-stage student", paths.one_stage / "student"))
    known = {}
    stored = paths.root / "teacher_eval.json"
    if stored.is_file():
        entry = json.loads(stored.read_text(encoding="utf-8"))
        if entry.get("fingerprint") == _teacher_fingerprint(teacher_reference(config), config.task):
            known["teacher"] = entry["metrics"]
    report = measure_models(
        models,
        config.task,
        config.report,
        config.seed,
        config.distill.train.eval_batch_size,
        config.teacher.trust_remote_code,
        task,
        known,
    )
    held_out = paths.student / "held_out.json"
    if held_out.is_file():
        report["held_out"] = json.loads(held_out.read_text(encoding="utf-8"))
    compute = paths.one_stage / "compute.json"
    if compute.is_file():
        report["two_stage"] = json.loads(compute.read_text(encoding="utf-8"))
    write_report(report, config.output_dir)
    write_report(report, paths.student)
    write_model_card(
        paths.student, dump_config(config), config.teacher.name, report, task.model_class.__name__
    )
    print_report(report)
    return report


def general(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> Path:
    """Stage one of two-stage distillation: the general student, in ``<output_dir>/general``."""
    return distill(general_config(config), overwrite, resume, callbacks)


def one_stage(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    task: Task | None = None,
) -> Path:
    """The comparison of a two-stage run: task distillation alone, from the configured
    initialisation, with the tokens of both stages together."""
    paths = Paths(config.output_dir)
    compute = matched_steps(paths.general / "student", paths.student)
    comparison = one_stage_config(config, compute["one_stage_steps"])
    console.print(
        f"[bold]one-stage comparison[/]: {compute['one_stage_steps']} steps = task stage "
        f"{compute['task_steps']} + general stage's {compute['general_tokens']:,} tokens at "
        f"{compute['task_tokens_per_step']:.0f} tokens per task step"
    )
    stored = paths.root / "teacher_eval.json"
    measured = json.loads(stored.read_text(encoding="utf-8")) if stored.is_file() else None
    folder = distill(comparison, overwrite, resume, callbacks, task, teacher_eval=measured)
    paths.one_stage.mkdir(parents=True, exist_ok=True)
    (paths.one_stage / "compute.json").write_text(
        json.dumps(compute, indent=2) + "\n", encoding="utf-8"
    )
    return folder


def run(
    config: ExperimentConfig,
    stages: Sequence[Stage] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any] | None:
    """Run the pipeline: finetune (when configured), general (two-stage runs), distill (and the
    one-stage comparison), evaluate."""
    if stages is None:
        stages = [
            s
            for s in STAGES
            if (s != "finetune" or config.finetune is not None)
            and (s != "general" or config.general is not None)
        ]
    task = validate(config, stages)
    if "finetune" in stages:
        finetune(config, overwrite, resume, callbacks, task)
    if "general" in stages:
        general(config, overwrite, resume, callbacks)
    if "distill" in stages:
        distill(config, overwrite, resume, callbacks, task)
        if config.general is not None and config.general.compare_one_stage:
            one_stage(config, overwrite, resume, callbacks, task)
    if "evaluate" in stages:
        return evaluate(config, task)
    return None
