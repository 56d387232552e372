"""In-batch similarity knowledge: the student's sentence-by-sentence cosine similarities learn
the teacher's. Widths never matter (the matrices are batch x batch), so no projection is
needed; it passes on how the teacher arranges sentences relative to each other, which is what
cosine scoring (STS, retrieval, clustering) reads."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from kdformer.config.knowledge.similarity import SimilarityConfig
from kdformer.features import Features
from kdformer.knowledge.pooled import PooledTerm
from kdformer.pooling import normalise


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """(batch, batch) cosine similarities of (batch, width) vectors, in float32 (also under
    mixed-precision autocast)."""
    with torch.autocast(device_type=vectors.device.type, enabled=False):
        unit = normalise(vectors.float())
        return unit @ unit.T


def _off_diagonal(size: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(size, dtype=torch.bool, device=device)


def similarity_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two (batch, batch) cosine matrices over the pairs of
    different sentences (the diagonal is 1 in both); 0 for a batch of one sentence."""
    s, t = cosine_matrix(student), cosine_matrix(teacher)
    pairs = _off_diagonal(s.shape[0], s.device)
    if not pairs.any():
        return s.sum() * 0.0
    return (s - t)[pairs].pow(2).mean()


def similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between each sentence's softmax over its cosines with the other
    sentences of the batch at ``temperature``, averaged over sentences; 0 for a batch of fewer
    than three sentences (one other sentence makes both distributions 1)."""
    s, t = cosine_matrix(student), cosine_matrix(teacher)
    size = s.shape[0]
    if size < 3:
        return s.sum() * 0.0
    pairs = _off_diagonal(size, s.device)
    s_log = torch.log_softmax((s / temperature)[pairs].reshape(size, size - 1), dim=-1)
    t_log = torch.log_softmax((t / temperature)[pairs].reshape(size, size - 1), dim=-1)
    return (t_log.exp() * (t_log - s_log)).sum(-1).mean()


class SimilarityKnowledge(PooledTerm):
    """Similarity structure: the student's in-batch cosine matrix learns the teacher's.

    Each model's last layer is pooled over real tokens (the task's pooling) into one vector per
    sentence; the (batch, batch) matrices of their cosines are compared by mse over the pairs
    of different sentences (default; similarity-preserving KD, Tung and Mori 2019), or by kl:
    per sentence, KL(teacher || student) of the softmax at ``temperature`` over its cosines
    with the other sentences. Widths and head counts do not matter; normalisation neither
    (cosines do not change under it). The signal grows with the batch: batch_size sentences
    give batch_size x (batch_size - 1) pairs per step."""

    config: SimilarityConfig

    def forward(
        self, student: Features, teacher: Features, batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        s, t = self.sentence_pair(student, teacher, batch)
        if self.config.loss == "kl":
            return similarity_kl(s, t, self.config.temperature)
        return similarity_mse(s, t)
