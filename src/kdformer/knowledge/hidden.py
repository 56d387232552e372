"""Hidden-state knowledge: each matched student layer's output learns the teacher layer's.

MSE with a learned linear projection when widths differ (TinyBERT), or cosine (DistilBERT).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

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


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of squared differences over real tokens and features; (batch, seq, dim) inputs."""
    squared = (student - teacher).pow(2) * mask.unsqueeze(-1)
    return squared.sum() / (mask.sum().clamp_min(1) * student.shape[-1])


def masked_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(student, teacher) over real tokens (DistilBERT's cosine embedding loss)."""
    cos = torch.nn.functional.cosine_similarity(student, teacher, dim=-1)
    return ((1 - cos) * mask).sum() / mask.sum().clamp_min(1)


class HiddenConfig(KnowledgeTermConfig):
    """Hidden-state distillation."""

    type: Literal["hidden"] = Field("hidden", description="Knowledge type name.")
    loss: Literal["mse", "cosine"] = Field(
        "mse", description="mse (TinyBERT) or cosine (DistilBERT)."
    )
    layers: Literal["uniform", "first", "last"] | list[tuple[int, int]] = Field(
        "uniform",
        description="Layer matching: uniform, first, last, or explicit [student, teacher] pairs "
        "(1-based; 0 is the embedding output).",
    )
    include_embeddings: bool = Field(
        False, description="Also match the embedding outputs (0 <-> 0)."
    )
    projection: Literal["auto", "per_layer", "shared", "none"] = Field(
        "auto",
        description="Student->teacher width projection: auto (per-layer linear only when widths "
        "differ), per_layer, shared (one for all layers), none (widths must be equal).",
    )


@register_knowledge(HiddenConfig)
class HiddenKnowledge(KnowledgeTerm):
    config: HiddenConfig

    def __init__(self, config: HiddenConfig, teacher: ModelShape, student: ModelShape):
        super().__init__(config, teacher, student)
        self.pairs = layer_pairs(config.layers, teacher.num_layers, student.num_layers)
        if config.include_embeddings and (0, 0) not in self.pairs:
            self.pairs = [(0, 0), *self.pairs]
        mode = config.projection
        if mode == "auto":
            mode = "per_layer" if teacher.hidden_size != student.hidden_size else "none"
        if mode == "none" and teacher.hidden_size != student.hidden_size:
            raise ConfigError(
                f"hidden knowledge with projection 'none' needs equal widths, but the student is "
                f"{student.hidden_size} wide and the teacher {teacher.hidden_size}; use "
                "projection: auto"
            )
        self.mode = mode
        s, t = student.hidden_size, teacher.hidden_size
        if mode == "per_layer":
            self.projections = nn.ModuleList(nn.Linear(s, t) for _ in self.pairs)
        elif mode == "shared":
            self.projections = nn.ModuleList([nn.Linear(s, t)])

    @property
    def needs(self) -> FeatureNeeds:
        return FeatureNeeds(hidden_states=True)

    def project(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return hidden
        return self.projections[index if self.mode == "per_layer" else 0](hidden)

    def forward(self, student: Features, teacher: Features, attention_mask=None) -> torch.Tensor:
        assert student.hidden_states is not None and teacher.hidden_states is not None
        mask = token_mask(attention_mask, student.hidden_states[0])
        compare = masked_mse if self.config.loss == "mse" else masked_cosine
        losses = [
            compare(self.project(i, student.hidden_states[s]), teacher.hidden_states[t], mask)
            for i, (s, t) in enumerate(self.pairs)
        ]
        return torch.stack(losses).mean()
