"""The finetune stage: the teacher trained on the task, resumable, saved atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import transformers

from kdformer.config import ExperimentConfig
from kdformer.families import check_models
from kdformer.models import load_model, load_tokenizer
from kdformer.pipeline.conversion_stage import convert_teacher, teacher_source
from kdformer.pipeline.outputs import (
    Paths,
    console,
    save_atomically,
    save_model,
    start_mode,
    write_config,
    write_training_record,
)
from kdformer.pipeline.validation import note_unused_length, validate
from kdformer.tasks import Task
from kdformer.training import TaskTrainer, build_trainer, gathered_state_dict, run_training


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
    mode = start_mode(paths.teacher, paths.checkpoints("teacher"), overwrite, resume)
    if mode == "skip":
        console.print(
            f"teacher already fine-tuned in {paths.teacher}; skipping (--overwrite redoes it)"
        )
        return paths.teacher
    write_config(config)
    if config.convert is not None:
        convert_teacher(config, overwrite)
    transformers.set_seed(config.seed)
    source = teacher_source(config)
    tokenizer = load_tokenizer(source)
    # A head of another task or size (a checkpoint fine-tuned elsewhere) is replaced.
    model = load_model(source, task.model_class, ignore_mismatched_sizes=True, **task.head_kwargs())
    task.align_model(model)
    pad_to = check_models([(model.config, "teacher")], task.config.max_length)
    train_features = task.tokenize(task.load("train"), tokenizer, "train")
    console.print(
        f"[bold]fine-tuning teacher[/] {source.name} on {task.describe_data()} "
        f"({len(train_features)} training inputs)"
    )
    note_unused_length(task, train_features, pad_to)
    trainer = build_trainer(
        TaskTrainer, model, config.finetune, paths.checkpoints("teacher"), config.seed, task,
        tokenizer, train_features, callbacks=callbacks, pad_to=pad_to,
    )  # fmt: skip
    run_training(
        trainer, paths.checkpoints("teacher"), mode == "resume", config.finetune, "finetune"
    )

    weights = gathered_state_dict(trainer)

    def save(folder: Path) -> None:
        save_model(model, tokenizer, config, folder, weights, task)
        write_training_record(trainer, folder)

    save_atomically(save, paths.teacher)
    console.print(f"teacher saved to {paths.teacher}")
    return paths.teacher
