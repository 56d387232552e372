"""Embedding-layer knowledge (TinyBERT)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdformer.config.knowledge.base import KnowledgeTermConfig


class EmbeddingConfig(KnowledgeTermConfig):
    """Embedding-layer distillation (TinyBERT)."""

    term: ClassVar[str] = "kdformer.knowledge.embedding:EmbeddingKnowledge"
    model_agnostic: ClassVar[bool] = True

    type: Literal["embedding"] = Field("embedding", description="Knowledge type name.")
    projection: Literal["auto", "linear", "none"] = Field(
        "auto",
        description="Student->teacher width projection: auto (linear only when widths differ), "
        "linear (always), none (widths must be equal).",
    )
