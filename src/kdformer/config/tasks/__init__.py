"""The task registry: one line per task type in :data:`TASK_SECTIONS`. The ``task:`` union,
the task a bare ``task.name`` implies, the reference docs and :func:`kdformer.tasks.build_task`
are all derived from it. Adding a task: its section here (a module of this package, with a
``type`` literal, its ``names`` and the ``implementation`` path) and its
:class:`kdformer.tasks.base.Task` module."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from kdformer.config.tasks.augment import AugmentConfig
from kdformer.config.tasks.base import TaskSection
from kdformer.config.tasks.classification import ClassificationTaskConfig
from kdformer.config.tasks.embedding import EmbeddingTaskConfig
from kdformer.config.tasks.ner import NerTaskConfig
from kdformer.config.tasks.qa import QATaskConfig
from kdformer.config.tasks.text import TextTaskConfig

TASK_SECTIONS: tuple[type[TaskSection], ...] = (
    ClassificationTaskConfig,
    NerTaskConfig,
    QATaskConfig,
    TextTaskConfig,
    EmbeddingTaskConfig,
)
"""Every task type's config section; the first is the default type."""

TASK_CONFIGS: dict[str, type[TaskSection]] = {
    cls.model_fields["type"].default: cls for cls in TASK_SECTIONS
}
"""Task config sections by ``task.type``."""

DEFAULT_TYPE = next(iter(TASK_CONFIGS))

TYPE_BY_NAME: dict[str, str] = {
    name: kind for kind, cls in TASK_CONFIGS.items() for name in cls.names
}
"""The task type a bare ``task.name`` implies (configs written before ``task.type``); any other
name means the default type."""


def task_type(value: Any) -> str:
    """The union tag of a task section: its ``type``, else implied by its ``name``."""
    if isinstance(value, dict):
        if value.get("type"):
            return str(value["type"])
        default_name = TASK_CONFIGS[DEFAULT_TYPE].model_fields["name"].default
        return TYPE_BY_NAME.get(str(value.get("name", default_name)).lower(), DEFAULT_TYPE)
    return str(getattr(value, "type", DEFAULT_TYPE))


TaskConfig = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in TASK_CONFIGS.items())],  # noqa: UP007
    Discriminator(
        task_type,
        custom_error_type="task_type",
        custom_error_message="unknown task type; valid: " + ", ".join(TASK_CONFIGS),
    ),
]
"""The ``task:`` section: one of the task config classes, chosen by ``type``."""

__all__ = [
    "TASK_CONFIGS",
    "TASK_SECTIONS",
    "TYPE_BY_NAME",
    "AugmentConfig",
    "ClassificationTaskConfig",
    "EmbeddingTaskConfig",
    "NerTaskConfig",
    "QATaskConfig",
    "TaskConfig",
    "TaskSection",
    "TextTaskConfig",
    "task_type",
]
