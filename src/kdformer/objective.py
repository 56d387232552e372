"""The distillation objective: weighted knowledge terms plus the ordinary hard-label loss.

Usable from a plain PyTorch loop::

    objective = DistillationObjective(cfg.knowledge, teacher.config, student.config, 0.5)
    teacher_features = extract_features(teacher, batch, objective.needs)   # under no_grad
    student_features = extract_features(student, batch, objective.needs)
    out = objective(student_features, teacher_features, batch["labels"], batch["attention_mask"])
    out.loss.backward()   # out.terms holds every term by name, for logging
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge import ModelShape, build_term
from kdformer.knowledge.base import KnowledgeTermConfig


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # unweighted value of each term, detached


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on gold labels, or MSE for single-output (regression) heads.
    Label -100 marks positions to ignore (token tasks)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def term_names(configs: Sequence[KnowledgeTermConfig]) -> list[str]:
    """Unique log names: the type, suffixed with its position when a type repeats."""
    types = [getattr(c, "type", "term") for c in configs]
    return [t if types.count(t) == 1 else f"{t}_{i}" for i, t in enumerate(types)]


class DistillationObjective(nn.Module):
    """Holds the knowledge terms (and their trainable projections) and combines them."""

    def __init__(
        self,
        knowledge: Sequence[KnowledgeTermConfig],
        teacher_config: Any,
        student_config: Any,
        hard_label_weight: float = 0.0,
    ):
        super().__init__()
        teacher, student = ModelShape.of(teacher_config), ModelShape.of(student_config)
        self.names = term_names(knowledge)
        self.terms = nn.ModuleDict(
            {name: build_term(cfg, teacher, student) for name, cfg in zip(self.names, knowledge)}
        )
        self.hard_label_weight = hard_label_weight

    @property
    def needs(self) -> FeatureNeeds:
        needs = FeatureNeeds()
        for term in self.terms.values():
            needs = needs | term.needs
        return needs

    def forward(
        self,
        student: Features,
        teacher: Features,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        total = student.logits.new_zeros(())
        values: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            value = term(student, teacher, attention_mask)
            values[name] = value.detach()
            total = total + term.config.weight * value
        if labels is not None and self.hard_label_weight > 0:
            value = hard_label_loss(student.logits, labels)
            values["hard_label"] = value.detach()
            total = total + self.hard_label_weight * value
        return ObjectiveOutput(loss=total, terms=values)
