"""What the sentence-vector terms share: each model's last layer pooled over the batch's real
tokens (the task's pooling), the hidden state that takes, and the layers the dry-run plan
lists. :mod:`.sentence_embedding` and :mod:`.similarity` compare the vectors differently."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from kdformer.config.knowledge.pooled import PooledConfig
from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge.base import KnowledgeTerm, ModelShape, teacher_token_mask, token_mask
from kdformer.matching import LayerGroup
from kdformer.pooling import pool


def resolved_pooling(config: PooledConfig, shape: ModelShape) -> str:
    """The pooling a term applies to one model: its config's, or with ``auto`` (not filled in
    by the run from the task) how the model's family sums a sequence up."""
    if config.pooling != "auto":
        return config.pooling
    return "cls" if shape.summary == "first" else "mean"


def sentence_vectors(
    features: Features,
    shape: ModelShape,
    batch: Mapping[str, torch.Tensor],
    how: str,
    side: Literal["student", "teacher"] = "student",
) -> torch.Tensor:
    """(batch, width) float32 sentence vectors of one model: its last layer's hidden states
    (``hidden_states[num_layers]``; BERT's ``last_hidden_state``) pooled over the batch's real
    tokens (the teacher's own, when it reads other tokens than the student)."""
    if features.hidden_states is None or len(features.hidden_states) <= shape.num_layers:
        raise KeyError(
            f"the features lack hidden state {shape.num_layers} (the last layer): extract them "
            "with the needs of the objective built for this teacher/student (objective.needs)"
        )
    hidden = features.hidden_states[shape.num_layers]
    mask = teacher_token_mask(batch, hidden) if side == "teacher" else token_mask(batch, hidden)
    return pool(hidden, mask, how)


def last_layer_needs(shape: ModelShape) -> FeatureNeeds:
    """The hidden states a sentence-vector term reads from one model: its last layer's."""
    return FeatureNeeds(hidden_states=True, hidden_layers=frozenset({shape.num_layers}))


class PooledTerm(KnowledgeTerm):
    """A term that compares one sentence vector per example, pooled from each model's last
    layer (each over its own tokens: a student with its own vocabulary needs no alignment)."""

    config: PooledConfig
    across_tokenizers = "example"

    def __init__(self, config: PooledConfig, teacher: ModelShape, student: ModelShape, outputs=()):
        super().__init__(config, teacher, student, outputs)
        self.groups = [LayerGroup(student.num_layers, (teacher.num_layers,), teacher.num_layers)]
        """The layers compared (the last of each), as the dry-run plan lists them."""

    @property
    def needs(self) -> FeatureNeeds:
        return self.needs_for("student") | self.needs_for("teacher")

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        return last_layer_needs(self.student_shape if side == "student" else self.teacher_shape)

    def sentence_pair(
        self, student: Features, teacher: Features, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, width) sentence vectors of the student and of the teacher."""
        s = sentence_vectors(
            student, self.student_shape, batch, resolved_pooling(self.config, self.student_shape)
        )
        t = sentence_vectors(
            teacher,
            self.teacher_shape,
            batch,
            resolved_pooling(self.config, self.teacher_shape),
            "teacher",
        )
        return s, t
