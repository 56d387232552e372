"""The distillation objective: weighted knowledge terms plus the ordinary hard-label loss.

Usable from a plain PyTorch loop::

    objective = DistillationObjective(cfg.knowledge, teacher.config, student.config, 0.5)
    teacher_signal = LiveTeacher(teacher, objective.needs_for("teacher"))  # frozen, no_grad
    prepare_model(student, objective.needs_for("student"))  # eager attention if maps are needed
    for step, batch in enumerate(loader):
        objective.set_progress(step / total_steps)     # only matters for scheduled terms
        student_features = extract_features(student, batch, objective.needs_for("student"))
        out = objective(student_features, teacher_signal(batch), batch["labels"],
                        batch["attention_mask"])
        out.loss.backward()   # out.terms holds every term by name, for logging

``objective.needs`` (both sides' needs together) also works for either model: per-layer module
requests for layers a model does not have are skipped. Put ``objective.parameters()`` in the
optimiser too: projections and many-to-one layer weights train with the student.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge import ModelShape, build_term
from kdformer.knowledge.base import KnowledgeTermConfig, scheduled


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
    """Holds the knowledge terms (and their trainable projections and layer mixers) and
    combines them.

    ``hard_label_weight_end``, when set, moves the hard-label weight linearly from
    ``hard_label_weight`` (progress 0) to it (progress 1); :meth:`set_progress` sets the training
    progress that this and scheduled terms (e.g. the logits temperature) read."""

    def __init__(
        self,
        knowledge: Sequence[KnowledgeTermConfig],
        teacher_config: Any,
        student_config: Any,
        hard_label_weight: float = 0.0,
        hard_label_weight_end: float | None = None,
    ):
        super().__init__()
        teacher, student = ModelShape.of(teacher_config), ModelShape.of(student_config)
        self.names = term_names(knowledge)
        self.terms = nn.ModuleDict(
            {name: build_term(cfg, teacher, student) for name, cfg in zip(self.names, knowledge)}
        )
        self.hard_label_weight = hard_label_weight
        self.hard_label_weight_end = hard_label_weight_end
        self.progress = 0.0

    def set_progress(self, fraction: float) -> None:
        """Training progress, 0 at the start and 1 at the end (clipped), for scheduled values.
        ``ProgressCallback`` calls it at every step of a ``DistillationTrainer`` run."""
        self.progress = min(max(float(fraction), 0.0), 1.0)
        for term in self.terms.values():
            term.progress = self.progress

    @property
    def current_hard_label_weight(self) -> float:
        """The hard-label weight at the current progress."""
        return scheduled(self.hard_label_weight, self.hard_label_weight_end, self.progress)

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        """What one model's forward pass must expose (per-layer modules differ by side)."""
        needs = FeatureNeeds()
        for term in self.terms.values():
            needs = needs | term.needs_for(side)
        return needs

    @property
    def needs(self) -> FeatureNeeds:
        """Both sides' needs together; safe to pass for either model."""
        return self.needs_for("student") | self.needs_for("teacher")

    def forward(
        self,
        student: Features,
        teacher: Features | None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        if teacher is None and len(self.terms):
            raise ValueError("teacher features are needed: the objective has knowledge terms")
        total = student.logits.new_zeros(())
        values: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            value = term(student, teacher, attention_mask)
            values[name] = value.detach()
            total = total + term.config.weight * value
        if labels is not None and max(self.hard_label_weight, self.hard_label_weight_end or 0) > 0:
            value = hard_label_loss(student.logits, labels)
            values["hard_label"] = value.detach()
            total = total + self.current_hard_label_weight * value
        return ObjectiveOutput(loss=total, terms=values)
