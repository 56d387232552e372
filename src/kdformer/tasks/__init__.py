"""Tasks: where data comes from, how it is tokenized and how predictions are scored.

Use :func:`build_task` with a :class:`~kdformer.config.TaskConfig`; it picks the task class by name.
"""

from __future__ import annotations

import difflib

from kdformer.config import TaskConfig
from kdformer.tasks.base import DataError, Task
from kdformer.tasks.classification import (
    CLASSIFICATION_TASK_NAMES,
    GLUE_TASKS,
    ClassificationTask,
)

_TASK_CLASSES: dict[str, type[Task]] = {
    name: ClassificationTask for name in CLASSIFICATION_TASK_NAMES
}
TASK_NAMES: list[str] = list(_TASK_CLASSES)


def build_task(config: TaskConfig, seed: int = 42) -> Task:
    """The task named by ``config.name``; ``seed`` draws the max_train_samples subset."""
    name = config.name.lower()
    if name not in _TASK_CLASSES:
        close = difflib.get_close_matches(name, TASK_NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(
            f"Unknown task '{config.name}'{hint}. Valid names: {', '.join(TASK_NAMES)}. Set "
            "task.name to one of them (use 'classification' for your own files)."
        )
    return _TASK_CLASSES[name](config, seed=seed)


__all__ = ["GLUE_TASKS", "TASK_NAMES", "ClassificationTask", "DataError", "Task", "build_task"]
