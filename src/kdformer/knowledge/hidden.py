"""Hidden-state knowledge: each matched student layer's output learns the teacher layer's.

MSE with a learned linear projection when widths differ (TinyBERT), cosine (DistilBERT), or
BERT-PKD's normalised [CLS] distance.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from kdformer.config.knowledge.hidden import HiddenConfig
from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge.base import KnowledgeTerm, ModelShape, token_mask
from kdformer.knowledge.layers import (
    Projections,
    TeacherLayerMixer,
    config_groups,
)
from kdformer.matching import LayerGroup
from kdformer.pooling import pool


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of squared differences over real tokens and features; (batch, seq, dim) inputs."""
    squared = (student.float() - teacher.float()).pow(2) * mask.unsqueeze(-1)
    return squared.sum() / (mask.sum().clamp_min(1) * student.shape[-1])


def masked_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(student, teacher) over real tokens (DistilBERT's cosine embedding loss)."""
    cos = torch.nn.functional.cosine_similarity(student.float(), teacher.float(), dim=-1)
    return ((1 - cos) * mask).sum() / mask.sum().clamp_min(1)


def summarise(hidden: torch.Tensor, mask: torch.Tensor, how: str = "first") -> torch.Tensor:
    """One vector per sequence of (batch, seq, dim) states: the first token's ([CLS], <s>), or
    the mean over real tokens (models that pool by mean, e.g. ModernBERT's ``mean`` pooling)."""
    return pool(hidden, mask, "cls" if how == "first" else "mean")


def cls_pkd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    student_summary: str = "first",
    teacher_summary: str = "first",
) -> torch.Tensor:
    """BERT-PKD's patient loss on one layer: the squared distance between the L2-normalised
    summary vectors (the first token, [CLS], unless a model pools by mean: see
    :func:`summarise`), averaged over the batch; (batch, seq, dim) inputs."""
    s = F.normalize(summarise(student.float(), mask, student_summary), dim=-1)
    t = F.normalize(summarise(teacher.float(), mask, teacher_summary), dim=-1)
    return (s - t).pow(2).sum(-1).mean()


class HiddenKnowledge(KnowledgeTerm):
    """Hidden states: each matched student layer's output learns the teacher layer's.

        Takes ``hidden_states[i]`` (layer outputs; 0 is the embedding output) from both models.
        Loss per layer: MSE over real tokens (TinyBERT), 1 - cosine (DistilBERT), or pkd (BERT-PKD:
        squared distance of the L2-normalised [CLS] vectors, or mean vectors for a model that pools
    by mean, averaged over the batch); averaged over
        layers. Widths: a learned linear projection of the student (per layer or shared) when they
        differ. Head counts do not matter. With layers: many_to_one each student layer learns a
        learned softmax mix of a window of teacher layers."""

    config: HiddenConfig

    def __init__(self, config: HiddenConfig, teacher: ModelShape, student: ModelShape, outputs=()):
        super().__init__(config, teacher, student, outputs)
        groups = config_groups(config, teacher, student)
        if config.include_embeddings and not any(g.student == 0 for g in groups):
            groups = [LayerGroup(0, (0,), 0), *groups]
        self.groups = groups
        self.pairs = [(g.student, g.centre) for g in groups]
        self.mixer = TeacherLayerMixer(groups)
        self.projections = Projections(
            config.projection, len(groups), student.hidden_size, teacher.hidden_size, "hidden"
        )
        self.mode = self.projections.mode

    @property
    def needs(self) -> FeatureNeeds:
        return self.needs_for("student") | self.needs_for("teacher")

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        layers = (
            {g.student for g in self.groups}
            if side == "student"
            else {t for g in self.groups for t in g.teachers}
        )
        return FeatureNeeds(hidden_states=True, hidden_layers=frozenset(layers))

    def project(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.projections.project(index, hidden)

    def forward(self, student: Features, teacher: Features, batch) -> torch.Tensor:
        assert student.hidden_states is not None and teacher.hidden_states is not None
        mask = token_mask(batch, student.hidden_states[0])

        def pkd(s: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            summaries = self.student_shape.summary, self.teacher_shape.summary
            return cls_pkd(s, t, m, *summaries)

        compare = {"mse": masked_mse, "cosine": masked_cosine, "pkd": pkd}[self.config.loss]
        losses = []
        for i, group in enumerate(self.groups):
            target = self.mixer.mix(i, [teacher.hidden_states[t] for t in group.teachers])
            losses.append(
                compare(self.project(i, student.hidden_states[group.student]), target, mask)
            )
        return torch.stack(losses).mean()
