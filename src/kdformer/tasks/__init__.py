"""Tasks: everything that differs between classification, NER, extractive QA and raw text.

``task.type`` picks one (see :mod:`kdformer.tasks.base` for the contract); :data:`TaskConfig`
is the tagged union of their config sections, so each task's fields are validated and
documented on their own. Configs that give only ``task.name`` keep working: GLUE names and
``classification`` mean type classification, ``conll2003`` ner, ``squad`` qa, ``text`` text.

Adding a task: one module with a ``TaskSection`` subclass (with a ``type`` literal) and a
``Task`` subclass, listed in :data:`TASKS` below, plus its tests.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from kdformer.tasks.base import DataError, LabelledTask, Scorer, Task, TaskSection
from kdformer.tasks.classification import (
    CLASSIFICATION_TASK_NAMES,
    GLUE_TASKS,
    ClassificationTask,
    ClassificationTaskConfig,
)
from kdformer.tasks.ner import NER_NAMES, NerTaskConfig, TokenClassificationTask
from kdformer.tasks.qa import QA_NAMES, QATaskConfig, QuestionAnsweringTask
from kdformer.tasks.text import TextTask, TextTaskConfig

TASKS: dict[str, type[Task]] = {
    task.type: task
    for task in (ClassificationTask, TokenClassificationTask, QuestionAnsweringTask, TextTask)
}
"""Task classes by ``task.type``."""

TYPE_BY_NAME: dict[str, str] = {
    **{name: "classification" for name in CLASSIFICATION_TASK_NAMES},
    **{name: "ner" for name in NER_NAMES},
    **{name: "qa" for name in QA_NAMES},
    "text": "text",
}
"""The task type a bare ``task.name`` implies (configs written before ``task.type``)."""

TASK_NAMES: list[str] = list(TYPE_BY_NAME)


def task_type(value: Any) -> str:
    """The union tag of a task section: its ``type``, else implied by its ``name``."""
    if isinstance(value, dict):
        if value.get("type"):
            return str(value["type"])
        return TYPE_BY_NAME.get(str(value.get("name", "sst2")).lower(), "classification")
    return str(getattr(value, "type", "classification"))


TaskConfig = Annotated[
    Union[  # noqa: UP007  (tagged members need the Union form)
        Annotated[ClassificationTaskConfig, Tag("classification")],
        Annotated[NerTaskConfig, Tag("ner")],
        Annotated[QATaskConfig, Tag("qa")],
        Annotated[TextTaskConfig, Tag("text")],
    ],
    Discriminator(
        task_type,
        custom_error_type="task_type",
        custom_error_message="unknown task type; valid: " + ", ".join(TASKS),
    ),
]
"""The ``task:`` section: one of the task config classes, chosen by ``type``."""

TASK_CONFIGS: dict[str, type[TaskSection]] = {t: cls.config_class for t, cls in TASKS.items()}


def build_task(config: TaskSection, seed: int = 42) -> Task:
    """The task for a validated task section; ``seed`` draws the max_train_samples subset."""
    kind = task_type(config)
    if kind not in TASKS:
        close = difflib.get_close_matches(kind, list(TASKS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"Unknown task type '{kind}'{hint}. Valid types: {', '.join(TASKS)}.")
    return TASKS[kind](config, seed=seed)  # type: ignore[arg-type]


__all__ = [
    "GLUE_TASKS",
    "TASKS",
    "TASK_CONFIGS",
    "TASK_NAMES",
    "ClassificationTask",
    "ClassificationTaskConfig",
    "DataError",
    "LabelledTask",
    "NerTaskConfig",
    "QATaskConfig",
    "QuestionAnsweringTask",
    "Scorer",
    "Task",
    "TaskConfig",
    "TaskSection",
    "TextTask",
    "TextTaskConfig",
    "TokenClassificationTask",
    "build_task",
    "task_type",
]
