"""Sentence-embedding knowledge: the student's sentence vector (its pooled last hidden states)
learns the teacher's, by direction (cosine) and by value (MSE), as in Reimers and Gurevych
(2020), where a student learns a teacher's sentence embeddings with an MSE loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F

from kdformer.config.knowledge.pooled import PooledConfig
from kdformer.config.knowledge.sentence_embedding import SentenceEmbeddingConfig
from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge.base import KnowledgeTerm, ModelShape, token_mask
from kdformer.knowledge.layers import Projections
from kdformer.matching import LayerGroup
from kdformer.pooling import pool


def embedding_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over sentences of 1 - cos(student, teacher); (batch, width) inputs, float32."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1)
    return (1 - cos).mean()


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over sentences and features of the squared difference (``nn.MSELoss``);
    (batch, width) inputs, float32."""
    return (student.float() - teacher.float()).pow(2).mean()


def resolved_pooling(config: PooledConfig, shape: ModelShape) -> str:
    """The pooling a term applies to one model: its config's, or with ``auto`` (not filled in
    by the run from the task) how the model's family sums a sequence up."""
    if config.pooling != "auto":
        return config.pooling
    return "cls" if shape.summary == "first" else "mean"


def sentence_vectors(
    features: Features, shape: ModelShape, batch: Mapping[str, torch.Tensor], how: str
) -> torch.Tensor:
    """(batch, width) float32 sentence vectors of one model: its last layer's hidden states
    (``hidden_states[num_layers]``; BERT's ``last_hidden_state``) pooled over the batch's real
    tokens."""
    if features.hidden_states is None or len(features.hidden_states) <= shape.num_layers:
        raise KeyError(
            f"the features lack hidden state {shape.num_layers} (the last layer): extract them "
            "with the needs of the objective built for this teacher/student (objective.needs)"
        )
    hidden = features.hidden_states[shape.num_layers]
    return pool(hidden, token_mask(batch, hidden), how)


def last_layer_needs(shape: ModelShape) -> FeatureNeeds:
    """The hidden states a sentence-vector term reads from one model: its last layer's."""
    return FeatureNeeds(hidden_states=True, hidden_layers=frozenset({shape.num_layers}))


class SentenceEmbeddingKnowledge(KnowledgeTerm):
    """Sentence embedding: the student's pooled last hidden states learn the teacher's.

    Each model's last layer is pooled over real tokens (the task's pooling: mean, cls or max);
    the student's vector goes through a learned linear projection when the widths differ
    (dropped when the student is saved). Losses, summed: cosine (1 - cos, the direction,
    which is all a normalised embedding keeps and all that cosine scores read) and mse (the
    pooled vectors before normalisation, so their length is learnt too). Normalisation is
    left out on purpose: cosine does not change under it, and on unit vectors the MSE would
    only repeat the cosine loss scaled by 2 / width."""

    config: SentenceEmbeddingConfig

    def __init__(
        self, config: SentenceEmbeddingConfig, teacher: ModelShape, student: ModelShape, outputs=()
    ):
        super().__init__(config, teacher, student, outputs)
        mode = "per_layer" if config.projection == "linear" else config.projection
        self.projections = Projections(
            mode, 1, student.hidden_size, teacher.hidden_size, "sentence_embedding"
        )
        self.groups = [LayerGroup(student.num_layers, (teacher.num_layers,), teacher.num_layers)]
        """The layers compared (the last of each), as the dry-run plan lists them."""

    @property
    def needs(self) -> FeatureNeeds:
        return self.needs_for("student") | self.needs_for("teacher")

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        return last_layer_needs(self.student_shape if side == "student" else self.teacher_shape)

    def forward(
        self, student: Features, teacher: Features, batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        s = sentence_vectors(
            student, self.student_shape, batch, resolved_pooling(self.config, self.student_shape)
        )
        t = sentence_vectors(
            teacher, self.teacher_shape, batch, resolved_pooling(self.config, self.teacher_shape)
        )
        s = self.projections.project(0, s).float()
        losses = {"cosine": embedding_cosine, "mse": embedding_mse}
        return torch.stack([losses[name](s, t) for name in self.config.loss]).sum()
