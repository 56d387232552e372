"""What knowledge moves from teacher to student, and how the student is trained."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from kdformer.config.base import Section
from kdformer.config.cache import TeacherCacheConfig
from kdformer.config.knowledge import (
    HiddenConfig,
    KnowledgeConfig,
    LogitsConfig,
    QKVRelationsConfig,
)
from kdformer.config.model import ExtraTeacherConfig
from kdformer.config.tasks import TextTaskConfig
from kdformer.config.train import TrainConfig


class DistillConfig(Section):
    """What knowledge moves from teacher to student, and how the student is trained."""

    knowledge: list[KnowledgeConfig] = Field(
        default_factory=lambda: [LogitsConfig()],
        description="Loss terms, each `{type: NAME, weight: W, ...}`; see `kdformer knowledge`.",
    )
    hard_label_weight: float = Field(
        0.5, ge=0, description="Weight of the ordinary task loss on gold labels (0: pure KD)."
    )
    hard_label_weight_end: float | None = Field(
        None,
        ge=0,
        description="If set, the hard-label weight moves linearly from hard_label_weight to this "
        "over training (optimiser step / total steps).",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation settings.")
    teachers: list[ExtraTeacherConfig] = Field(
        default_factory=list,
        description="More task-trained teachers beside `teacher` (which shapes and initialises "
        "the student), each `{id: ID, name: MODEL, weight: W}`; they must share its tokenizer. "
        "Soft labels mix all teachers; a knowledge term's `teacher:` picks another source.",
    )
    teacher_weight: float = Field(
        1.0, gt=0, description="The main teacher's weight in the soft-label mix."
    )
    teacher_weighting: Literal["fixed", "confidence"] = Field(
        "fixed",
        description="fixed: the teachers' weights; confidence: also each teacher's top "
        "probability on each example (or token), renormalised per example.",
    )
    cache: TeacherCacheConfig = Field(
        default_factory=TeacherCacheConfig,
        description="Teacher-output cache (offline distillation); `cache: true` turns it on.",
    )
    allow_weak_teacher: bool = Field(
        False,
        description="Distil even when the teacher does not beat the task's trivial baseline by "
        "report.min_teacher_gain (the report then marks retention as meaningless). CLI: "
        "--allow-weak-teacher.",
    )

    @field_validator("teachers")
    @classmethod
    def _unique_ids(cls, value: list[ExtraTeacherConfig]) -> list[ExtraTeacherConfig]:
        ids = [t.id for t in value]
        reserved = sorted({"main", "all", "each"} & set(ids))
        if reserved:
            raise ValueError(f"teacher ids {reserved} are reserved; name them otherwise")
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"teacher ids must be unique; repeated: {repeated}")
        return value

    def teacher_weights(self) -> dict[str, float]:
        """Every teacher's soft-label weight by id (the main one is ``main``)."""
        return {"main": self.teacher_weight, **{t.id: t.weight for t in self.teachers}}

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class GeneralConfig(DistillConfig):
    """Stage one of two-stage distillation: task-agnostic distillation on raw text from the
    teacher *before* task fine-tuning, whose student then starts the task stage. The
    distillation fields are those of `distill:`, with defaults for raw text."""

    task: TextTaskConfig = Field(..., description="The raw text (a `type: text` task section).")
    knowledge: list[KnowledgeConfig] = Field(
        default_factory=lambda: [HiddenConfig(), QKVRelationsConfig()],
        description="Loss terms of the general stage (with an MLM teacher add {type: logits}).",
    )
    hard_label_weight: float = Field(
        1.0, ge=0, description="Weight of the MLM loss when the teacher has an MLM head."
    )
    compare_one_stage: bool = Field(
        True,
        description="Also distil a student on the task alone, initialised as `student:` says "
        "(init: teacher, the default, copies teacher layers), with as many training tokens as "
        "both stages together, and report it beside the two-stage student.",
    )
