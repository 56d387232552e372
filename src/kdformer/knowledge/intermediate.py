"""Feed-forward intermediate knowledge: each matched student layer's feed-forward activations
learn the teacher layer's."""

from __future__ import annotations

from typing import Literal

import torch

from kdformer.config.knowledge.intermediate import IntermediateConfig
from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge.base import KnowledgeTerm, ModelShape, token_mask
from kdformer.knowledge.hidden import masked_mse
from kdformer.knowledge.layers import (
    Projections,
    TeacherLayerMixer,
    config_groups,
    encoder_groups,
    layer_module,
    layer_module_needs,
)


class IntermediateKnowledge(KnowledgeTerm):
    """Feed-forward intermediate: MSE between the layers' feed-forward activations.

    Takes the output of each matched layer's ``intermediate`` module (the first feed-forward
    projection after its activation, batch x seq x intermediate_size) through forward hooks; MSE
    over real tokens and features, averaged over layers. Intermediate widths: a learned linear
    projection of the student's activations (per layer or shared) when they differ. Head counts
    do not matter. many_to_one mixes a window of teacher layers with learned weights."""

    config: IntermediateConfig

    def __init__(
        self, config: IntermediateConfig, teacher: ModelShape, student: ModelShape, outputs=()
    ):
        super().__init__(config, teacher, student, outputs)
        self.groups = encoder_groups(
            config_groups(config, teacher, student), "intermediate", "feed-forward block"
        )
        self.mixer = TeacherLayerMixer(self.groups)
        self.projections = Projections(
            config.projection,
            len(self.groups),
            student.intermediate_size,
            teacher.intermediate_size,
            "intermediate",
        )

    @property
    def needs(self) -> FeatureNeeds:
        return self.needs_for("student") | self.needs_for("teacher")

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        return layer_module_needs(self.groups, side, ["intermediate"])

    def forward(self, student: Features, teacher: Features, batch) -> torch.Tensor:
        losses = []
        for i, group in enumerate(self.groups):
            activations = layer_module(student, ("intermediate", group.student), "student")
            mask = token_mask(batch, activations)
            target = self.mixer.mix(
                i, [layer_module(teacher, ("intermediate", t), "teacher") for t in group.teachers]
            )
            losses.append(masked_mse(self.projections.project(i, activations), target, mask))
        return torch.stack(losses).mean()
