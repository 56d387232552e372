"""One distillation experiment: every section of a run config, assembled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from kdformer.config.base import Section
from kdformer.config.convert import ConvertConfig
from kdformer.config.distill import DistillConfig, GeneralConfig
from kdformer.config.export import ExportConfig
from kdformer.config.model import ModelConfig
from kdformer.config.report import ReportConfig
from kdformer.config.student import StudentConfig
from kdformer.config.tasks import ClassificationTaskConfig, TaskConfig
from kdformer.config.train import TrainConfig


class ExperimentConfig(Section):
    """One distillation experiment: optional teacher fine-tuning, distillation, evaluation."""

    output_dir: Path = Field(Path("runs/experiment"), description="Where everything is written.")
    seed: int = Field(42, description="Random seed for data sampling, initialisation and training.")
    task: TaskConfig = Field(
        default_factory=ClassificationTaskConfig,
        description="Task and data: a section of one task type (classification, ner, qa, text, "
        "embedding; see `kdformer config fields task`).",
    )
    teacher: ModelConfig = Field(
        default_factory=lambda: ModelConfig(name="minilm-l6"), description="The teacher."
    )
    convert: ConvertConfig | None = Field(
        None,
        description="Convert the full-attention teacher to efficient attention first (into "
        "<output_dir>/converted; needs finetune: the converted model has no task head). Unset: "
        "the teacher is used as it is.",
    )
    finetune: TrainConfig | None = Field(
        None,
        description="Fine-tune the teacher on the task first (into <output_dir>/teacher). Unset: "
        "the teacher is already trained for the task.",
    )
    general: GeneralConfig | None = Field(
        None,
        description="Two-stage distillation: first distil a general student on raw text (from "
        "the teacher before fine-tuning), then distil the task into it. Unset: one stage.",
    )
    student: StudentConfig = Field(default_factory=StudentConfig, description="Student shape/init.")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Distillation.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Measurement.")
    export: ExportConfig = Field(
        default_factory=ExportConfig,
        description="ONNX export of the student before the report (`export: true`); its rows "
        "join the report when it runs on the CPU.",
    )

    @field_validator("export", mode="before")
    @classmethod
    def _export_shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("output_dir")
    @classmethod
    def _not_root(cls, value: Path) -> Path:
        if str(value) in {"", "/", "."}:
            raise ValueError("output_dir must name a folder of its own, e.g. runs/sst2")
        return value
