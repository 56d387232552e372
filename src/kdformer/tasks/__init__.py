"""Tasks: everything that differs between classification, NER, extractive QA, raw text and
sentence embeddings.

``task.type`` picks one (see :mod:`kdformer.tasks.base` for the contract). The list of task
types is :data:`kdformer.config.tasks.TASK_SECTIONS`; each section names its task class by
import path, and :data:`TASKS` is derived from it.
"""

from __future__ import annotations

import difflib

from kdformer.config.base import DataError, import_path
from kdformer.config.tasks import TASK_CONFIGS, TaskConfig, TaskSection, task_type
from kdformer.tasks.base import LabelledTask, Scorer, Task, example_inputs

TASKS: dict[str, type[Task]] = {
    kind: import_path(config.implementation) for kind, config in TASK_CONFIGS.items()
}
"""Task classes by ``task.type``."""


def build_task(config: TaskSection, seed: int = 42) -> Task:
    """The task for a validated task section; ``seed`` draws the max_train_samples subset."""
    kind = task_type(config)
    if kind not in TASKS:
        close = difflib.get_close_matches(kind, list(TASKS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"Unknown task type '{kind}'{hint}. Valid types: {', '.join(TASKS)}.")
    return TASKS[kind](config, seed=seed)  # type: ignore[arg-type]


__all__ = [
    "TASKS",
    "TASK_CONFIGS",
    "DataError",
    "LabelledTask",
    "Scorer",
    "Task",
    "TaskConfig",
    "TaskSection",
    "build_task",
    "example_inputs",
    "task_type",
]
