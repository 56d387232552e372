"""Sentence-embedding knowledge: the student's sentence vector (its pooled last hidden states)
learns the teacher's, by direction (cosine) and by value (MSE), as in Reimers and Gurevych
(2020), where a student learns a teacher's sentence embeddings with an MSE loss."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from kdformer.config.knowledge.sentence_embedding import SentenceEmbeddingConfig
from kdformer.features import Features
from kdformer.knowledge.base import ModelShape
from kdformer.knowledge.layers import Projections
from kdformer.knowledge.pooled import PooledTerm


def embedding_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over sentences of 1 - cos(student, teacher); (batch, width) inputs, float32."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1)
    return (1 - cos).mean()


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over sentences and features of the squared difference (``nn.MSELoss``);
    (batch, width) inputs, float32."""
    return (student.float() - teacher.float()).pow(2).mean()


class SentenceEmbeddingKnowledge(PooledTerm):
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

    def forward(
        self, student: Features, teacher: Features, batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        s, t = self.sentence_pair(student, teacher, batch)
        s = self.projections.project(0, s).float()
        losses = {"cosine": embedding_cosine, "mse": embedding_mse}
        return torch.stack([losses[name](s, t) for name in self.config.loss]).sum()
