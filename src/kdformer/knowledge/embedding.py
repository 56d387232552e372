"""Embedding-layer knowledge (TinyBERT): the student's embedding output learns the teacher's."""

from __future__ import annotations

import torch

from kdformer.config.knowledge.embedding import EmbeddingConfig
from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge.base import (
    KnowledgeTerm,
    ModelShape,
    token_mask,
)
from kdformer.knowledge.hidden import masked_mse
from kdformer.knowledge.layers import Projections


class EmbeddingKnowledge(KnowledgeTerm):
    """Embeddings (TinyBERT): MSE between the embedding-layer outputs.

    Takes ``hidden_states[0]`` (word + position + token-type embeddings after LayerNorm) from
    both models; MSE over real tokens and features. Widths: a learned linear projection of the
    student's embeddings (TinyBERT's W_e) when they differ. Head counts do not matter. The same
    as hidden with layers: [[0, 0]], as a type of its own so it can be weighted separately."""

    config: EmbeddingConfig

    def __init__(
        self, config: EmbeddingConfig, teacher: ModelShape, student: ModelShape, outputs=()
    ):
        super().__init__(config, teacher, student, outputs)
        mode = "per_layer" if config.projection == "linear" else config.projection
        self.projections = Projections(
            mode, 1, student.hidden_size, teacher.hidden_size, "embedding"
        )

    @property
    def needs(self) -> FeatureNeeds:
        return FeatureNeeds(hidden_states=True, hidden_layers=frozenset({0}))

    def forward(self, student: Features, teacher: Features, batch) -> torch.Tensor:
        assert student.hidden_states is not None and teacher.hidden_states is not None
        embeddings = student.hidden_states[0]
        mask = token_mask(batch, embeddings)
        return masked_mse(self.projections.project(0, embeddings), teacher.hidden_states[0], mask)
