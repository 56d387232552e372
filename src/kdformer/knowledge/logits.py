"""Soft-logit knowledge (Hinton et al., 2015; DistilBERT): match the teacher's output distribution."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from kdformer.features import Features
from kdformer.knowledge.base import (
    KnowledgeTerm,
    KnowledgeTermConfig,
    register_knowledge,
    scheduled,
)


def kl_with_temperature(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2, averaged over examples (rows of the last dimension).

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    """
    t = temperature
    teacher_log_probs = F.log_softmax(teacher_logits.float() / t, dim=-1)  # fp32 under autocast
    student_log_probs = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return kl.mean() * t * t


def logits_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between raw logits (also the only sensible choice for regression)."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


class LogitsConfig(KnowledgeTermConfig):
    """Soft-logit distillation."""

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


@register_knowledge(LogitsConfig)
class LogitsKnowledge(KnowledgeTerm):
    """Soft logits: KL at temperature T (times T^2) or MSE between the output logits.

    Takes the task head's logits from both models (Hinton et al.; DistilBERT), so widths and head
    counts do not matter; the label sets must be equal. T can follow a linear schedule over
    training (temperature -> temperature_end). Single-output (regression) heads always use MSE,
    since a KL over one class is identically zero. Per-token logits (batch, seq, classes) are
    compared on real tokens only."""

    config: LogitsConfig

    @property
    def temperature(self) -> float:
        """The temperature at the current training progress."""
        end = self.config.temperature_end if self.config.temperature_schedule == "linear" else None
        return scheduled(self.config.temperature, end, self.progress)

    def forward(self, student: Features, teacher: Features, attention_mask=None) -> torch.Tensor:
        s, t = student.logits, teacher.logits
        if s.shape != t.shape:
            raise ValueError(f"student logits {tuple(s.shape)} != teacher logits {tuple(t.shape)}")
        if s.dim() == 3 and attention_mask is not None:
            keep = attention_mask.bool()
            s, t = s[keep], t[keep]
        if self.config.loss == "mse" or s.shape[-1] == 1:
            return logits_mse(s, t)
        return kl_with_temperature(s, t, self.temperature)
