"""Models to load: the teacher and more teachers beside it."""

from __future__ import annotations

from pydantic import Field

from kdformer.config.base import Section


class ModelConfig(Section):
    """A model to load with `transformers` `from_pretrained`."""

    name: str = Field(
        ...,
        description="Short name (see `kdformer models`), hub name (e.g. bert-base-uncased) or a "
        "local directory.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(
        False, description="Allow code from the model repository to run. Off unless you trust it."
    )


class ExtraTeacherConfig(ModelConfig):
    """One more task-trained teacher (several-teacher distillation)."""

    id: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The name knowledge terms use in `teacher:` (not main, all or each).",
    )
    weight: float = Field(
        1.0, gt=0, description="Its weight in the soft-label mix (the main teacher's: "
        "distill.teacher_weight).",
    )  # fmt: skip
