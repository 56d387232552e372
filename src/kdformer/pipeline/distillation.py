"""The distill stage (and the general and one-stage runs of two-stage distillation): teacher(s),
student, objective and teacher signal assembled into a :class:`~kdformer.distiller.Distiller`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import transformers

from kdformer.config import ExperimentConfig, dump_config
from kdformer.distiller import Distiller
from kdformer.models import load_tokenizer
from kdformer.objective import MAIN
from kdformer.pipeline.cross_tokenizer import give_vocabulary, own_tokenizer, signal_for
from kdformer.pipeline.outputs import (
    Paths,
    console,
    save_atomically,
    save_model,
    start_mode,
    write_config,
    write_training_record,
)
from kdformer.pipeline.teachers import (
    check_teacher,
    evaluate_teacher,
    load_teacher,
    teacher_reference,
)
from kdformer.pipeline.two_stage import (
    general_config,
    matched_steps,
    one_stage_config,
    task_stage_config,
)
from kdformer.pipeline.validation import (
    build_objective,
    distill_model_configs,
    distill_pad_length,
    note_unused_length,
    validate,
)
from kdformer.pruning import importance_batches
from kdformer.report.card import write_model_card
from kdformer.students import build_student
from kdformer.tasks import Task


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
    mode = start_mode(paths.student, paths.checkpoints("student"), overwrite, resume)
    if mode == "skip":
        console.print(
            f"student already distilled in {paths.student}; skipping (--overwrite redoes it)"
        )
        return paths.student
    write_config(config)
    transformers.set_seed(config.seed)
    reference = teacher_reference(config)
    teacher = load_teacher(reference, task)
    tokenizer = load_tokenizer(reference)
    pad_to = distill_pad_length(
        task, teacher.config, *distill_model_configs(config, teacher.config)
    )
    check_teacher(
        config, task, teacher_eval or evaluate_teacher(config, task, teacher, tokenizer, pad_to)
    )
    own = own_tokenizer(config, task, tokenizer)  # the student's own vocabulary, if any
    student_reads = own if own is not None else tokenizer
    if own is None:
        train_features = task.tokenize(task.distillation_examples(), tokenizer, "train")
    else:
        train_features = task.cross_tokenize(task.distillation_examples(), own, tokenizer)
    importance_data = None
    if config.student.init == "pruned":
        # Importance from the teacher's task loss on gold-labelled train data; a task without
        # gold labels (embeddings, raw text without MLM) scores on its distillation inputs
        # with the output Fisher (kdformer.pruning).
        examples = task.load("train") if task.label_keys else task.distillation_examples()
        importance_data = importance_batches(
            task.tokenize(examples, tokenizer, "train"),
            task.collator(tokenizer, "train", pad_to),
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
    if own is not None:
        give_vocabulary(config, student, own, tokenizer)
    others = {}
    for extra in config.distill.teachers:  # tokenizers and heads checked by validate()
        others[extra.id] = load_teacher(extra, task)
    objective = build_objective(
        config, task, teacher.config, student.config, {i: m.config for i, m in others.items()}
    )
    signal, train_features, collator = signal_for(
        config, teacher, tokenizer, own, task, objective.needs_for("teacher"), train_features,
        pad_to,
    )  # fmt: skip
    signals = {MAIN: signal}
    for teacher_id, other in others.items():
        signals[teacher_id], train_features, collator = signal_for(
            config, other, tokenizer, own, task, objective.needs_of_teacher(teacher_id),
            train_features, pad_to,
        )  # fmt: skip
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
    note_unused_length(task, train_features, pad_to)
    distiller = Distiller(
        student, signals if others else signal, objective, task, student_reads,
        config.distill.train,
        paths.checkpoints("student"), train_features=train_features, collator=collator,
        callbacks=callbacks, seed=config.seed, pad_to=pad_to,
    )  # fmt: skip
    trainer = distiller.train(resume=mode == "resume")
    held_out = trainer.held_out_objective() if task.main_metric is None else None
    weights = distiller.student_weights()

    def save(folder: Path) -> None:
        save_model(student, student_reads, config, folder, weights, task)
        write_training_record(trainer, folder, distiller.signal)
        if held_out is not None:
            (folder / "held_out.json").write_text(
                json.dumps(held_out, indent=2) + "\n", encoding="utf-8"
            )
        write_model_card(
            folder, dump_config(config), config.teacher.name, None, task.model_class.__name__,
            task.card_dataset(), task.pipeline_tag, task=task,
        )  # fmt: skip

    save_atomically(save, paths.student)
    console.print(f"student saved to {paths.student}")
    return paths.student


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
