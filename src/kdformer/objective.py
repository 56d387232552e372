"""The distillation objective: weighted knowledge terms plus the ordinary hard-label loss.

Usable from a plain PyTorch loop::

    objective = DistillationObjective(cfg.knowledge, teacher.config, student.config,
                                      outputs=task.outputs, hard_label_weight=0.5)
    teacher_signal = LiveTeacher(teacher, objective.needs_for("teacher"))  # frozen, no_grad
    prepare_model(student, objective.needs_for("student"))  # checks the hooked modules exist
    for step, batch in enumerate(loader):
        objective.set_progress(step / total_steps)     # only matters for scheduled terms
        student_features = extract_features(student, batch, objective.needs_for("student"))
        out = objective(student_features, teacher_signal(batch), batch)
        out.loss.backward()   # out.terms holds every term by name, for logging

``outputs`` says which model outputs the task distils and where their gold labels are
(:class:`kdformer.features.OutputSpec`; every task lists its own as ``task.outputs``). The batch
carries the attention mask and the gold labels. ``objective.needs`` (both sides' needs
together) also works for either model: per-layer module requests for layers a model does not
have are skipped. Put ``objective.parameters()`` in the optimiser too: projections and
many-to-one layer weights train with the student.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from kdformer.configbase import ConfigError
from kdformer.families import family_of, find_family
from kdformer.features import FeatureNeeds, Features, OutputSpec
from kdformer.knowledge import ModelShape, build_term
from kdformer.knowledge.base import KnowledgeTermConfig, scheduled
from kdformer.knowledge.logits import hard_label_loss


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # unweighted value of each term, detached


def term_names(configs: Sequence[KnowledgeTermConfig]) -> list[str]:
    """Unique log names: the type, suffixed with its position when a type repeats."""
    types = [getattr(c, "type", "term") for c in configs]
    return [t if types.count(t) == 1 else f"{t}_{i}" for i, t in enumerate(types)]


def check_knowledge_supported(
    knowledge: Sequence[KnowledgeTermConfig], teacher_config: Any, student_config: Any
) -> None:
    """ConfigError, before training, when either model's family cannot supply a requested
    knowledge type (it names the family and the types it supports). Models of no declared
    family can still give logits, hidden states and embeddings."""
    types = [str(getattr(c, "type", "")) for c in knowledge]
    for config, role in ((teacher_config, "teacher"), (student_config, "student")):
        family = find_family(config)
        if family is not None:
            family.check_knowledge(config, types, role)
            continue
        needs_layout = sorted(set(types) - {"logits", "hidden", "embedding"})
        if needs_layout:
            family_of(config)  # the error lists the declared families


class DistillationObjective(nn.Module):
    """Holds the knowledge terms (and their trainable projections and layer mixers) and
    combines them with the hard-label loss of every task output that has gold labels.

    ``hard_label_weight_end``, when set, moves the hard-label weight linearly from
    ``hard_label_weight`` (progress 0) to it (progress 1); :meth:`set_progress` sets the training
    progress that this and scheduled terms (e.g. the logits temperature) read."""

    def __init__(
        self,
        knowledge: Sequence[KnowledgeTermConfig],
        teacher_config: Any,
        student_config: Any,
        outputs: Sequence[OutputSpec],
        hard_label_weight: float = 0.0,
        hard_label_weight_end: float | None = None,
    ):
        super().__init__()
        check_knowledge_supported(knowledge, teacher_config, student_config)
        teacher, student = ModelShape.of(teacher_config), ModelShape.of(student_config)
        self.outputs = tuple(outputs)
        self.names = term_names(knowledge)
        self.terms = nn.ModuleDict(
            {
                name: build_term(cfg, teacher, student, self.outputs)
                for name, cfg in zip(self.names, knowledge)
            }
        )
        self.hard_label_weight = hard_label_weight
        self.hard_label_weight_end = hard_label_weight_end
        self.progress = 0.0
        if not len(self.terms) and not self.uses_hard_labels:
            raise ConfigError(
                "the distillation objective is empty: no knowledge terms and no hard-label loss "
                "(hard_label_weight is 0, or the task has no gold labels). Add a knowledge type "
                "to distill.knowledge (see `kdformer knowledge`) or set distill.hard_label_weight"
            )

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

    @property
    def uses_hard_labels(self) -> bool:
        """Whether gold labels enter the loss at any point of training."""
        weight = max(self.hard_label_weight, self.hard_label_weight_end or 0)
        return weight > 0 and any(o.label_key for o in self.outputs)

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        """What one model's forward pass must expose (per-layer modules differ by side)."""
        needs = FeatureNeeds()
        if side == "student" and self.uses_hard_labels:
            needs = FeatureNeeds(outputs=frozenset(o.name for o in self.outputs if o.label_key))
        for term in self.terms.values():
            needs = needs | term.needs_for(side)
        return needs

    @property
    def needs(self) -> FeatureNeeds:
        """Both sides' needs together; safe to pass for either model."""
        return self.needs_for("student") | self.needs_for("teacher")

    def hard_loss(
        self, student: Features, batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Mean supervised loss over the outputs whose gold labels the batch carries."""
        losses = [
            hard_label_loss(spec, student.outputs[spec.name], batch[spec.label_key], batch)
            for spec in self.outputs
            if spec.label_key and spec.label_key in batch
        ]
        return torch.stack(losses).mean() if losses else None

    def forward(
        self,
        student: Features,
        teacher: Features | None,
        batch: Mapping[str, torch.Tensor],
    ) -> ObjectiveOutput:
        if teacher is None and len(self.terms):
            raise ValueError("teacher features are needed: the objective has knowledge terms")
        weighted: list[torch.Tensor] = []
        values: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            value = term(student, teacher, batch)
            values[name] = value.detach()
            weighted.append(term.config.weight * value)
        if self.uses_hard_labels:
            value = self.hard_loss(student, batch)
            if value is not None:
                values["hard_label"] = value.detach()
                weighted.append(self.current_hard_label_weight * value)
        if not weighted:
            raise ValueError(
                f"nothing to compute: no knowledge terms, and the batch holds none of the gold "
                f"labels {[o.label_key for o in self.outputs if o.label_key]}"
            )
        return ObjectiveOutput(loss=torch.stack(weighted).sum(), terms=values)
