"""Knowledge types: one module per loss family, each registered under its ``type`` name:
logits, hidden, attention, embedding, intermediate, value_relation, qkv_relations.

``KnowledgeConfig`` is the tagged union the config file uses: ``{type: logits, weight: 1}``.
"""

from typing import Annotated

from pydantic import Field

from kdformer.knowledge.attention import AttentionConfig, AttentionKnowledge
from kdformer.knowledge.base import (
    KNOWLEDGE,
    KnowledgeTerm,
    KnowledgeTermConfig,
    ModelShape,
    build_term,
    register_knowledge,
)
from kdformer.knowledge.embedding import EmbeddingConfig, EmbeddingKnowledge
from kdformer.knowledge.hidden import HiddenConfig, HiddenKnowledge
from kdformer.knowledge.intermediate import IntermediateConfig, IntermediateKnowledge
from kdformer.knowledge.logits import LogitsConfig, LogitsKnowledge
from kdformer.knowledge.relations import (
    QKVRelationsConfig,
    QKVRelationsKnowledge,
    ValueRelationConfig,
    ValueRelationKnowledge,
)

KnowledgeConfig = Annotated[
    LogitsConfig
    | HiddenConfig
    | AttentionConfig
    | EmbeddingConfig
    | IntermediateConfig
    | ValueRelationConfig
    | QKVRelationsConfig,
    Field(discriminator="type"),
]

__all__ = [
    "KNOWLEDGE",
    "AttentionConfig",
    "AttentionKnowledge",
    "EmbeddingConfig",
    "EmbeddingKnowledge",
    "HiddenConfig",
    "HiddenKnowledge",
    "IntermediateConfig",
    "IntermediateKnowledge",
    "KnowledgeConfig",
    "KnowledgeTerm",
    "KnowledgeTermConfig",
    "LogitsConfig",
    "LogitsKnowledge",
    "ModelShape",
    "QKVRelationsConfig",
    "QKVRelationsKnowledge",
    "ValueRelationConfig",
    "ValueRelationKnowledge",
    "build_term",
    "register_knowledge",
]
