"""Soft-logit knowledge (Hinton et al., 2015)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from kdformer.config.knowledge.base import KnowledgeTermConfig


class LogitsConfig(KnowledgeTermConfig):
    """Soft-logit distillation."""

    term: ClassVar[str] = "kdformer.knowledge.logits:LogitsKnowledge"
    model_agnostic: ClassVar[bool] = True

    type: Literal["logits"] = Field("logits", description="Knowledge type name.")
    loss: Literal["kl", "mse"] = Field(
        "kl", description="kl: KL at temperature T scaled by T^2; mse: MSE on raw logits."
    )
    temperature: float = Field(
        2.0,
        gt=0,
        description="Softmax temperature T for the kl loss (the start value if scheduled).",
    )
    temperature_end: float | None = Field(
        None, gt=0, description="Temperature at the end of training (temperature_schedule: linear)."
    )
    temperature_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="constant: T throughout; linear: from temperature to temperature_end over "
        "training progress (optimiser step / total steps).",
    )

    @model_validator(mode="after")
    def _schedule_has_end(self) -> LogitsConfig:
        if self.temperature_schedule == "linear" and self.temperature_end is None:
            raise ValueError("temperature_schedule: linear needs temperature_end")
        if self.temperature_schedule == "constant" and self.temperature_end is not None:
            raise ValueError(
                "temperature_end is only used with temperature_schedule: linear; set it or drop "
                "temperature_end"
            )
        return self
