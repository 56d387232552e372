"""Validation: everything a run can check cheaply (config, data files, labels, lengths,
model shapes, tokenizers, precision, export), before any training starts; and the one length
every batch of a run is padded to when a model family needs one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from kdformer.config import ConfigError, ExperimentConfig, TrainConfig
from kdformer.devices import resolve_device
from kdformer.distributed import training_device
from kdformer.export.onnx import check_opset
from kdformer.families import check_models
from kdformer.models import check_same_tokenizer, load_model_config, load_tokenizer
from kdformer.objective import DistillationObjective
from kdformer.pipeline.budget import report_and_check
from kdformer.pipeline.conversion_stage import source_teacher_config
from kdformer.pipeline.cross_tokenizer import check_vocabulary_setup
from kdformer.pipeline.export import fixed_length_of
from kdformer.pipeline.outputs import Paths, check_output_dir, console, is_finished
from kdformer.pipeline.teachers import check_cache_setup, check_other_teachers
from kdformer.pipeline.two_stage import general_config, task_stage_config
from kdformer.report.measure import check_latency_length
from kdformer.students import student_config
from kdformer.tasks import Task, build_task

Stage = Literal["finetune", "general", "distill", "evaluate"]
STAGES: tuple[Stage, ...] = ("finetune", "general", "distill", "evaluate")


def distill_model_configs(
    config: ExperimentConfig, teacher_config: Any
) -> tuple[Any, dict[str, Any]]:
    """The configs of the models a distill stage of ``config`` trains with besides the main
    teacher: the student's (a pretrained student's own, or before the general stage has
    written it the shape it will have; else the teacher's with the student's shape) and the
    other teachers' by id."""
    student = config.student
    if student.init == "pretrained":
        if not student.pretrained:
            raise ConfigError("student.init: pretrained needs student.pretrained")
        if config.general is None or Path(student.pretrained).exists():
            student_cfg = load_model_config(student.pretrained)
        else:  # the general stage writes it
            student_cfg = student_config(
                teacher_config, student.model_copy(update={"init": "teacher"})
            )
    else:
        student_cfg = student_config(teacher_config, student)
        if student.vocabulary is not None and student.vocabulary.train is not None:
            student_cfg.vocab_size = student.vocabulary.size  # at most: a trained vocabulary's
    return student_cfg, {extra.id: load_model_config(extra) for extra in config.distill.teachers}


def distill_pad_length(
    task: Task, teacher_config: Any, student_config: Any, others: dict[str, Any]
) -> int | None:
    """The one length every batch of a distillation (and of its report) is padded to, when a
    model's family needs one (Nyströmformer's fixed length, BigBird's block-sparse minimum);
    None: each batch's own longest input. A value of the run, from its models: collators, the
    teacher cache and the evaluations get it passed. Checks each model's input rules too."""
    models = [(teacher_config, "teacher"), (student_config, "student")]
    models += [(c, f"teacher {i}") for i, c in others.items()]
    return check_models(models, task.config.max_length)


def check_distill_setup(config: ExperimentConfig, task: Task, teacher_config: Any) -> None:
    """The student's shape or starting model, and the objective, against the teacher."""
    student_cfg, others = distill_model_configs(config, teacher_config)
    pretrained = config.student.pretrained
    check_vocabulary_setup(config, task)
    if (
        config.student.init == "pretrained"
        and config.student.vocabulary is None
        and (config.general is None or Path(pretrained).exists())
    ):
        check_same_tokenizer(load_tokenizer(config.teacher), load_tokenizer(pretrained))
    if config.distill.teachers:
        check_other_teachers(config, task, others, load_tokenizer(config.teacher))
    pad_to = distill_pad_length(task, teacher_config, student_cfg, others)
    check_cache_setup(config)
    check_exportable(config, student_cfg)
    objective = build_objective(config, task, teacher_config, student_cfg, others)
    report_and_check(
        task, student_cfg, [teacher_config, *others.values()], objective,
        config.distill.train, "distill.train", pad_to or task.config.max_length,
        len(objective.needs_for("teacher").hidden_layers), config.distill.cache.enabled,
        None if pad_to else lambda: longest_training_input(task, load_tokenizer(config.teacher)),
    )  # fmt: skip


def check_room_for_text(task: Task, tokenizer: Any) -> None:
    """Refuse a ``max_length`` that leaves no room for text once the tokenizer's special tokens
    ([CLS] and [SEP] around a pair of texts) are in."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    if task.config.max_length < special + 2:
        raise ConfigError(
            f"task.max_length {task.config.max_length} leaves no room for text: the tokenizer "
            f"adds {special} special tokens to a pair of texts. Set task.max_length to the "
            "length of your inputs in tokens (128 suits most sentence tasks)"
        )


def check_precision(train: TrainConfig, setting: str) -> None:
    """fp16 needs a GPU; say so before loading anything rather than at the Trainer's start."""

    if train.mixed_precision == "fp16" and training_device().type != "cuda":
        raise ConfigError(
            f"{setting}.mixed_precision: fp16 needs a CUDA GPU and this machine trains on the "
            "CPU: use bf16 (CPUs with bfloat16 support) or no"
        )


def check_exportable(config: ExperimentConfig, student_config: Any) -> None:
    """With ``export: true``, refuse before training an opset the installed onnx does not
    know, and a student that runs at one fixed length (exported graphs take any length)."""

    if config.export.enabled:
        check_opset(config.export.opset)
    fixed = fixed_length_of(student_config) if config.export.enabled else None
    if fixed is not None:
        raise ConfigError(
            f"export: true, but the student is a {fixed[0]} model that runs at one fixed "
            f"length ({fixed[1]} tokens), and exported graphs take any length: set export: false, "
            "or distill a full-attention or local_global student"
        )


def validate(config: ExperimentConfig, stages: Sequence[Stage], task: Task | None = None) -> Task:
    """Fail fast: data, labels, lengths, model shapes, knowledge terms and tokenizers, before
    training. ``task``: reuse one built from ``config.task`` and ``config.seed`` (studies share
    them)."""
    check_output_dir(config.output_dir)
    resolve_device(config.report.device)
    task = task or build_task(config.task, config.seed)
    if "finetune" in stages and config.finetune is None:
        raise ConfigError(
            "the finetune stage needs a `finetune:` section (training settings for the teacher)"
        )
    if "finetune" in stages and task.finetune_refusal:
        raise ConfigError(task.finetune_refusal)
    if "general" in stages and config.general is None:
        raise ConfigError("the general stage needs a `general:` section (raw text and training)")
    if config.convert is not None and config.finetune is None:
        raise ConfigError(
            "convert: needs a `finetune:` section too: the converted teacher has no task head "
            "(and long inputs to learn), so it is fine-tuned on the task before distilling"
        )
    teacher_config = source_teacher_config(config)
    task.adapt_to_teacher(teacher_config)
    task.check_lengths(teacher_config, config.teacher.name)
    if "evaluate" in stages:
        check_latency_length(config.report.latency_seq_length, teacher_config, config.teacher.name)
    tokenizer = load_tokenizer(config.teacher)
    check_room_for_text(task, tokenizer)
    if "finetune" in stages and config.finetune is not None:
        check_precision(config.finetune, "finetune")
    if "distill" in stages:
        check_precision(config.distill.train, "distill.train")
    pad_to = check_models([(teacher_config, "teacher")], task.config.max_length)
    if {"finetune", "distill"} & set(stages):
        task.load("train")
    task.load("eval")
    task.check_inputs(tokenizer)
    if "finetune" in stages and config.finetune is not None:
        report_and_check(
            task, teacher_config, [], None, config.finetune, "finetune",
            pad_to or task.config.max_length,
            longest_input=None if pad_to else lambda: longest_training_input(task, tokenizer),
        )  # fmt: skip
    if "general" in stages:
        stage_one = general_config(config)
        general_task = build_task(stage_one.task, config.seed)
        general_task.adapt_to_teacher(teacher_config)
        general_task.check_lengths(teacher_config, config.teacher.name)
        check_models([(teacher_config, "teacher")], general_task.config.max_length)
        general_task.load("train")
        general_task.load("eval")
        check_distill_setup(stage_one, general_task, teacher_config)
    if "distill" in stages:
        check_distill_setup(task_stage_config(config), task, teacher_config)
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


def build_objective(
    config: ExperimentConfig,
    task: Task,
    teacher_config: Any,
    student_config: Any,
    other_teachers: dict[str, Any],
) -> DistillationObjective:
    """The distillation objective a config asks for (several teachers included); knowledge
    terms that pool sentences with ``pooling: auto`` take the task's pooling (an embedding
    task's, from its teacher)."""
    return DistillationObjective(
        with_task_pooling(config.distill.knowledge, task),
        teacher_config,
        student_config,
        task.outputs,
        config.distill.hard_label_weight,
        hard_label_weight_end=config.distill.hard_label_weight_end,
        other_teachers=other_teachers,
        teacher_weights=config.distill.teacher_weights(),
        weighting=config.distill.teacher_weighting,
        cross_tokenizer=config.student.vocabulary is not None,
    )


def with_task_pooling(knowledge: Sequence[Any], task: Task) -> list[Any]:
    """The knowledge configs, those with ``pooling: auto`` given the task's sentence pooling
    when it has one (others keep auto: each model's family decides)."""
    pooling = task.sentence_pooling
    if pooling is None:
        return list(knowledge)
    return [
        term.model_copy(update={"pooling": pooling})
        if getattr(term, "pooling", None) == "auto"
        else term
        for term in knowledge
    ]


def longest_training_input(task: Task, tokenizer: Any) -> int:
    """Tokens in the longest training input (0 where the task's features are not one
    ``input_ids`` column): what batches pad to when each pads to its own longest."""
    features = task.tokenize(task.load("train"), tokenizer, "train")
    if "input_ids" not in features.column_names:
        return 0
    return max((len(ids) for ids in features["input_ids"]), default=0)


def note_unused_length(task: Task, features: Any, pad_to: int | None = None) -> None:
    """Say so when ``max_length`` is far beyond the longest training input: harmless with
    per-batch padding, wasted compute when a model family pads every batch to one length
    (``pad_to``)."""
    limit = task.config.max_length
    longest = max((len(ids) for ids in features["input_ids"]), default=0)
    if not longest or longest * 2 > limit:
        return
    if pad_to:
        console.print(
            f"[yellow]note: every batch is padded to {pad_to} tokens, but the longest "
            f"training input has {longest}: a lower task.max_length saves most of the compute[/]"
        )
    else:
        console.print(
            f"note: task.max_length is {limit} and the longest training input has {longest} "
            "tokens; nothing is truncated, and batches pad to their own longest input"
        )
