"""Fields of the terms that compare sentence vectors (pooled last hidden states)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from kdformer.config.knowledge.base import KnowledgeTermConfig
from kdformer.config.pooling import POOLING_DESCRIPTION, Pooling


class PooledConfig(KnowledgeTermConfig):
    """Fields of every term that compares one vector per sentence."""

    model_agnostic: ClassVar[bool] = True

    pooling: Pooling = Field(
        "auto",
        description="How each model's last hidden states become one sentence vector: "
        + POOLING_DESCRIPTION
        + " auto: the task's (an embedding task's pooling, from its teacher); on other tasks, "
        "how each model's family sums a sequence up (BERT: cls, ModernBERT: mean).",
    )
