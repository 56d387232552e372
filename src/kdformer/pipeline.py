"""The workflows behind the CLI: fine-tune a teacher, distill a student, evaluate both.

Layout of ``output_dir``::

    config.yaml             the resolved config of the last run
    teacher/                fine-tuned teacher (only when `finetune:` is set)
    student/                distilled student + tokenizer + README.md model card + report
    checkpoints/<stage>/    resumable Trainer checkpoints (and TensorBoard logs under runs/)
    report.json, report.md  teacher vs student

Safety rules: everything that can be checked cheaply (config, data files and columns, labels,
model shapes, tokenizers) is checked before any training starts; a finished ``teacher/`` or
``student/`` is skipped unless ``overwrite``, and even then is replaced only once the new one is
saved; leftover checkpoints of an interrupted run are never silently discarded.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import transformers
from rich.console import Console

from kdformer.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    ReportConfig,
    TaskConfig,
    TrainConfig,
    dump_config,
)
from kdformer.models import check_same_tokenizer, load_model, load_tokenizer
from kdformer.models import load_config as load_model_config
from kdformer.objective import DistillationObjective
from kdformer.report import (
    build_report,
    majority_baseline,
    measure_loaded,
    print_report,
    write_report,
)
from kdformer.report.card import write_model_card
from kdformer.students import build_student, student_config
from kdformer.tasks import DataError, Task, build_task
from kdformer.teacher import LiveTeacher
from kdformer.training import (
    DistillationModel,
    DistillationTrainer,
    latest_checkpoint,
    training_arguments,
)

console = Console(stderr=True)
Stage = Literal["finetune", "distill", "evaluate"]
STAGES: tuple[Stage, ...] = ("finetune", "distill", "evaluate")


@dataclass
class Paths:
    root: Path

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    @property
    def student(self) -> Path:
        return self.root / "student"

    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage


def is_finished(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file()


def teacher_reference(config: ExperimentConfig) -> ModelConfig:
    """The task-trained teacher: the fine-tuned one when `finetune:` is set, else `teacher`."""
    if config.finetune is None:
        return config.teacher
    return config.teacher.model_copy(update={"name": str(Paths(config.output_dir).teacher)})


# ------------------------------------------------------------------------------------------
# Checks before work
# ------------------------------------------------------------------------------------------


def validate(config: ExperimentConfig, stages: Sequence[Stage], task: Task | None = None) -> Task:
    """Fail fast: data, labels, model shapes, knowledge terms and tokenizers, before training.
    ``task``: reuse one built from ``config.task`` and ``config.seed`` (studies share them)."""
    task = task or build_task(config.task, config.seed)
    if "finetune" in stages or "distill" in stages:
        task.load("train")
    task.load("eval")
    if "finetune" in stages and config.finetune is None:
        raise ConfigError(
            "the finetune stage needs a `finetune:` section (training settings for the teacher)"
        )
    if "distill" in stages:
        teacher_config = load_model_config(config.teacher)
        if config.student.init == "pretrained":
            if not config.student.pretrained:
                raise ConfigError("student.init: pretrained needs student.pretrained")
            student_cfg = load_model_config(config.student.pretrained)
            check_same_tokenizer(
                load_tokenizer(config.teacher), load_tokenizer(config.student.pretrained)
            )
        else:
            student_cfg = student_config(teacher_config, config.student)
        DistillationObjective(
            config.distill.knowledge,
            teacher_config,
            student_cfg,
            config.distill.hard_label_weight,
            hard_label_weight_end=config.distill.hard_label_weight_end,
        )
        if (
            "finetune" not in stages
            and config.finetune is not None
            and not is_finished(Paths(config.output_dir).teacher)
        ):
            raise ConfigError(
                f"distill needs the fine-tuned teacher in {Paths(config.output_dir).teacher}, which "
                "does not exist yet: run `kdformer finetune` first, or `kdformer run` for both"
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


def _datasets(task: Task, tokenizer: Any) -> tuple[Any, Any]:
    return task.tokenize(task.load("train"), tokenizer), task.tokenize(task.load("eval"), tokenizer)


def _metrics(task: Task) -> Callable[[Any], dict[str, float]]:
    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return task.compute_metrics(logits, prediction.label_ids)

    return compute


# ------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------


def _train(
    trainer_class: type[transformers.Trainer],
    model: Any,
    config: ExperimentConfig,
    train: TrainConfig,
    checkpoints: Path,
    task: Task,
    tokenizer: Any,
    datasets: tuple[Any, Any],
    callbacks: Sequence[Any],
    mode: str,
) -> None:
    """Train with the library's Trainer (or a subclass), resuming from the last checkpoint."""
    trainer = trainer_class(
        model=model,
        args=training_arguments(train, checkpoints, config.seed, True),
        train_dataset=datasets[0],
        eval_dataset=datasets[1],
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_metrics(task),
        callbacks=list(callbacks),
    )
    last = latest_checkpoint(checkpoints) if mode == "resume" else None
    trainer.train(resume_from_checkpoint=str(last) if last else None)


def _save_model(model: Any, tokenizer: Any, config: ExperimentConfig, folder: Path) -> None:
    """Weights (safetensors), tokenizer and the config that made them, loadable with plain
    ``from_pretrained``."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "kdformer_config.yaml").write_text(dump_config(config), encoding="utf-8")


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
    model = load_model(config.teacher, task.model_class, **task.model_label_kwargs())
    train_ds, eval_ds = _datasets(task, tokenizer)
    console.print(
        f"[bold]fine-tuning teacher[/] {config.teacher.name} on {task.name} "
        f"({len(train_ds)} examples)"
    )
    _train(
        transformers.Trainer,
        model,
        config,
        config.finetune,
        paths.checkpoints("teacher"),
        task,
        tokenizer,
        (train_ds, eval_ds),
        callbacks,
        mode,
    )
    save_atomically(lambda folder: _save_model(model, tokenizer, config, folder), paths.teacher)
    console.print(f"teacher saved to {paths.teacher}")
    return paths.teacher


def load_teacher(reference: ModelConfig, task: Task) -> Any:
    """Load a task-trained teacher, refusing one whose task head is untrained."""
    model, info = load_model(reference, task.model_class, output_loading_info=True)
    head_missing = [k for k in info.get("missing_keys", []) if "classifier" in k or "score" in k]
    if head_missing:
        raise ConfigError(
            f"teacher '{reference.name}' has no trained task head (missing {sorted(head_missing)}). "
            "Fine-tune it on the task first: add a `finetune:` section to the config"
        )
    task.check_model(model.config)
    return model


def distill(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    task: Task | None = None,
) -> Path:
    """Distill the task-trained teacher into a student saved in ``<output_dir>/student``."""
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
    train_ds, eval_ds = _datasets(task, tokenizer)
    importance_data = None
    if config.student.init == "pruned":  # importance from the teacher's task loss on train data
        from kdformer.pruning import importance_batches

        importance_data = importance_batches(
            train_ds,
            task.collator(tokenizer),
            config.distill.train.batch_size,
            config.seed,
            task.label_ids_for_model(teacher.config),
        )
    student = build_student(
        teacher, config.student, task.model_class, config.seed, data=importance_data
    )
    attention_impl = student.config._attn_implementation
    objective = DistillationObjective(
        config.distill.knowledge,
        teacher.config,
        student.config,
        config.distill.hard_label_weight,
        hard_label_weight_end=config.distill.hard_label_weight_end,
    )
    teacher_signal = LiveTeacher(teacher, objective.needs_for("teacher"))
    model = DistillationModel(student, objective, teacher_signal)
    terms = ", ".join(f"{n} x{t.config.weight}" for n, t in objective.terms.items())
    console.print(
        f"[bold]distilling[/] {reference.name} ({teacher.config.num_hidden_layers} layers) -> student "
        f"({student.config.num_hidden_layers} x {student.config.hidden_size}, init {config.student.init}); "
        f"knowledge: {terms}; hard labels x{config.distill.hard_label_weight}"
    )
    _train(
        DistillationTrainer,
        model,
        config,
        config.distill.train,
        paths.checkpoints("student"),
        task,
        tokenizer,
        (train_ds, eval_ds),
        callbacks,
        mode,
    )
    if hasattr(student, "set_attn_implementation"):
        student.set_attn_implementation(attention_impl)

    def save(folder: Path) -> None:
        _save_model(student, tokenizer, config, folder)
        write_model_card(folder, dump_config(config), reference.name, None)

    save_atomically(save, paths.student)
    console.print(f"student saved to {paths.student}")
    return paths.student


def measure_models(
    models: Sequence[tuple[str, str | Path]],
    task_config: TaskConfig,
    report: ReportConfig,
    seed: int = 42,
    eval_batch_size: int = 128,
    trust_remote_code: bool = False,
    task: Task | None = None,
) -> dict[str, Any]:
    """Evaluate and time each (name, model folder or hub name) side by side on the eval set."""
    task = task or build_task(task_config, seed)
    eval_raw = task.load("eval")
    loaded = []
    for name, source in models:
        reference = ModelConfig(name=str(source), trust_remote_code=trust_remote_code)
        model = load_model(reference, task.model_class)
        task.check_model(model.config)
        path = source if Path(str(source)).is_dir() else None
        loaded.append((name, model, load_tokenizer(reference), path))
    measurements = measure_loaded(loaded, task, eval_raw, report, eval_batch_size)
    try:
        baseline = majority_baseline(task, task.load("train"), eval_raw)
    except DataError:  # an evaluation-only setup may have no training split
        baseline = None
    return build_report(
        task.name, task.main_metric, len(eval_raw), measurements, report, baseline=baseline
    )


def evaluate(config: ExperimentConfig, task: Task | None = None) -> dict[str, Any]:
    """Teacher vs student report for an experiment; written next to both and printed."""
    paths = Paths(config.output_dir)
    if not is_finished(paths.student):
        raise ConfigError(f"no distilled student in {paths.student}: run `kdformer distill` first")
    report = measure_models(
        [("teacher", teacher_reference(config).name), ("student", paths.student)],
        config.task,
        config.report,
        config.seed,
        config.distill.train.eval_batch_size,
        config.teacher.trust_remote_code,
        task,
    )
    write_report(report, config.output_dir)
    write_report(report, paths.student)
    write_model_card(paths.student, dump_config(config), config.teacher.name, report)
    print_report(report)
    return report


def run(
    config: ExperimentConfig,
    stages: Sequence[Stage] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any] | None:
    """Run the pipeline: finetune (when configured), distill, evaluate."""
    stages = list(stages or [s for s in STAGES if s != "finetune" or config.finetune is not None])
    task = validate(config, stages)
    if "finetune" in stages:
        finetune(config, overwrite, resume, callbacks, task)
    if "distill" in stages:
        distill(config, overwrite, resume, callbacks, task)
    if "evaluate" in stages:
        return evaluate(config, task)
    return None
