"""The knowledge registry: one line per knowledge type in :data:`KNOWLEDGE_SECTIONS`. The
``knowledge:`` union, the families' lists of what they can supply, the CLI's ``kdformer
knowledge`` and :func:`kdformer.knowledge.build_term` are all derived from it. Adding a type:
its section here (a module of this package, with a ``type`` literal and its ``term`` path) and
its :class:`kdformer.knowledge.base.KnowledgeTerm` module."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from kdformer.config.knowledge.attention import AttentionConfig
from kdformer.config.knowledge.base import KnowledgeTermConfig
from kdformer.config.knowledge.embedding import EmbeddingConfig
from kdformer.config.knowledge.hidden import HiddenConfig
from kdformer.config.knowledge.intermediate import IntermediateConfig
from kdformer.config.knowledge.layers import LayerMatchedConfig, MapConfig, MatchStrategy
from kdformer.config.knowledge.logits import LogitsConfig
from kdformer.config.knowledge.pooled import PooledConfig
from kdformer.config.knowledge.relations import QKVRelationsConfig, ValueRelationConfig
from kdformer.config.knowledge.sentence_embedding import SentenceEmbeddingConfig
from kdformer.config.knowledge.similarity import SimilarityConfig

KNOWLEDGE_SECTIONS: tuple[type[KnowledgeTermConfig], ...] = (
    LogitsConfig,
    HiddenConfig,
    AttentionConfig,
    EmbeddingConfig,
    IntermediateConfig,
    ValueRelationConfig,
    QKVRelationsConfig,
    SentenceEmbeddingConfig,
    SimilarityConfig,
)
"""Every knowledge type's config section."""

KNOWLEDGE_CONFIGS: dict[str, type[KnowledgeTermConfig]] = {
    cls.model_fields["type"].default: cls for cls in KNOWLEDGE_SECTIONS
}
"""Knowledge config sections by ``type``."""

KnowledgeConfig = Annotated[
    Union[KNOWLEDGE_SECTIONS],  # noqa: UP007
    Field(discriminator="type"),
]
"""One ``knowledge:`` entry, ``{type: NAME, weight: W, ...}``."""

__all__ = [
    "KNOWLEDGE_CONFIGS",
    "KNOWLEDGE_SECTIONS",
    "AttentionConfig",
    "EmbeddingConfig",
    "HiddenConfig",
    "IntermediateConfig",
    "KnowledgeConfig",
    "KnowledgeTermConfig",
    "LayerMatchedConfig",
    "LogitsConfig",
    "MapConfig",
    "MatchStrategy",
    "PooledConfig",
    "QKVRelationsConfig",
    "SentenceEmbeddingConfig",
    "SimilarityConfig",
    "ValueRelationConfig",
]
