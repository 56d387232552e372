"""Two-stage distillation as configs: the general (raw-text) stage, the task stage that starts
from its student, and the one-stage comparison trained on as many tokens as both stages."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kdformer.config import DistillConfig, ExperimentConfig
from kdformer.pipeline.outputs import Paths
from kdformer.pipeline.teachers import teacher_reference


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
