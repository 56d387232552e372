"""The teacher signal: the features a teacher gives for a batch.

``LiveTeacher`` runs a frozen model now; a cache of stored teacher outputs can implement the
same ``__call__`` later without the objective or trainer noticing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from torch import nn

from kdformer.features import FeatureNeeds, Features, extract_features, prepare_model


class TeacherSignal(Protocol):
    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> Features: ...


class LiveTeacher:
    """A frozen teacher in eval mode: no dropout, no gradients, moved to the batch's device."""

    def __init__(self, model: nn.Module, needs: FeatureNeeds):
        self.model = model.eval().requires_grad_(False)
        self.needs = needs
        prepare_model(self.model, needs)

    @torch.no_grad()
    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> Features:
        device = inputs["input_ids"].device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        self.model.eval()
        return extract_features(self.model, inputs, self.needs)


class TeacherEnsemble:
    """Several teachers' signals (live or cached) as one: every teacher's features by id, for
    a :class:`~kdformer.objective.DistillationObjective` built with ``other_teachers``."""

    def __init__(self, signals: Mapping[str, TeacherSignal]):
        self.signals = dict(signals)

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, Features]:
        return {teacher_id: signal(inputs) for teacher_id, signal in self.signals.items()}
