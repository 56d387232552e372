"""Fields every task section has."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from kdformer.config.base import Section


class TaskSection(Section):
    """Fields every task config has; each task adds a ``type`` literal and its own fields."""

    names: ClassVar[tuple[str, ...]] = ()
    """Values of ``name`` that imply this section's ``type`` in configs that give only a name."""
    implementation: ClassVar[str]
    """Where the task's code lives, ``"package.module:Class"`` (imported only when a task is
    built, so configuration never loads torch)."""

    name: str = Field(..., description="Task name, used in reports and folder names.")
    max_length: int = Field(
        128, gt=0, description="Tokens per model input (window) after truncation."
    )
    max_train_samples: int | None = Field(
        None, gt=0, description="Use a random subset of this many training examples (seeded)."
    )
    max_eval_samples: int | None = Field(
        None, gt=0, description="Use only the first this-many evaluation examples."
    )
