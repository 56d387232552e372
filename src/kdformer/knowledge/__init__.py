"""Knowledge types: one module per loss family (logits, hidden, attention, embedding,
intermediate, value_relation, qkv_relations, sentence_embedding, similarity), each configured
by its section in :mod:`kdformer.config.knowledge`, whose registry is the single list of types.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdformer.config.base import import_path
from kdformer.config.knowledge import KNOWLEDGE_CONFIGS, KnowledgeConfig, KnowledgeTermConfig
from kdformer.knowledge.base import KnowledgeTerm, ModelShape, build_term


@dataclass(frozen=True)
class Registered:
    """A knowledge type: its config section and its loss term."""

    config_class: type[KnowledgeTermConfig]
    term_class: type[KnowledgeTerm]


KNOWLEDGE: dict[str, Registered] = {
    name: Registered(config, import_path(config.term)) for name, config in KNOWLEDGE_CONFIGS.items()
}
"""Every knowledge type by name, derived from :data:`kdformer.config.knowledge.KNOWLEDGE_CONFIGS`."""

__all__ = [
    "KNOWLEDGE",
    "KnowledgeConfig",
    "KnowledgeTerm",
    "KnowledgeTermConfig",
    "ModelShape",
    "Registered",
    "build_term",
]
