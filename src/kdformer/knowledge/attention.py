"""Attention-map knowledge: each matched student layer's attention distributions learn the
teacher's (KL per query row and head, as MiniLM does for its last layer)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from kdformer.configbase import ConfigError
from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge.base import (
    KnowledgeTerm,
    KnowledgeTermConfig,
    ModelShape,
    register_knowledge,
    token_mask,
)
from kdformer.matching import layer_pairs

EPS = 1e-12


def attention_kl(
    student_probs: torch.Tensor, teacher_probs: torch.Tensor, query_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student) per (head, query) row of (batch, heads, q, k) attention
    probabilities, averaged over heads and real query positions. Zero-probability (masked) keys
    contribute nothing."""
    log_t = teacher_probs.clamp_min(EPS).log()
    log_s = student_probs.clamp_min(EPS).log()
    rows = (teacher_probs * (log_t - log_s)).sum(-1)  # (batch, heads, q)
    weights = query_mask.unsqueeze(1)
    return (rows * weights).sum() / (weights.sum().clamp_min(1) * rows.shape[1])


def regroup_heads(probs: torch.Tensor, heads: int) -> torch.Tensor:
    """Average groups of adjacent heads: (b, H, q, k) -> (b, heads, q, k); H must divide by heads.
    A mean of distributions is still a distribution, so KL stays well defined."""
    b, h, q, k = probs.shape
    return probs.reshape(b, heads, h // heads, q, k).mean(2)


class AttentionConfig(KnowledgeTermConfig):
    """Attention-distribution distillation."""

    type: Literal["attention"] = Field("attention", description="Knowledge type name.")
    loss: Literal["kl"] = Field("kl", description="kl: KL between attention distributions.")
    layers: Literal["uniform", "first", "last"] | list[tuple[int, int]] = Field(
        "uniform", description="Layer matching: uniform, first, last, or [student, teacher] pairs."
    )
    heads: Literal["match", "average"] = Field(
        "match",
        description="match: head i <-> head i, teacher heads regrouped (averaged) when the "
        "teacher has k times the student's heads; average: compare head-averaged maps.",
    )


@register_knowledge(AttentionConfig)
class AttentionKnowledge(KnowledgeTerm):
    config: AttentionConfig

    def __init__(self, config: AttentionConfig, teacher: ModelShape, student: ModelShape):
        super().__init__(config, teacher, student)
        self.pairs = [
            (s, t)
            for s, t in layer_pairs(config.layers, teacher.num_layers, student.num_layers)
            if s > 0 and t > 0
        ]
        th, sh = teacher.num_heads, student.num_heads
        if config.heads == "match" and th % sh != 0:
            raise ConfigError(
                f"attention knowledge cannot match heads: the teacher has {th} heads and the "
                f"student {sh}, and {th} is not a multiple of {sh}. Give the student a head count "
                f"that divides {th}, or set heads: average"
            )

    @property
    def needs(self) -> FeatureNeeds:
        return FeatureNeeds(attentions=True)

    def forward(self, student: Features, teacher: Features, attention_mask=None) -> torch.Tensor:
        assert student.attentions is not None and teacher.attentions is not None
        mask = token_mask(attention_mask, student.attentions[0][:, 0])
        losses = []
        for s, t in self.pairs:
            s_probs, t_probs = student.attentions[s - 1], teacher.attentions[t - 1]
            if self.config.heads == "average":
                s_probs, t_probs = s_probs.mean(1, keepdim=True), t_probs.mean(1, keepdim=True)
            elif t_probs.shape[1] != s_probs.shape[1]:
                t_probs = regroup_heads(t_probs, s_probs.shape[1])
            losses.append(attention_kl(s_probs, t_probs, mask))
        return torch.stack(losses).mean()
