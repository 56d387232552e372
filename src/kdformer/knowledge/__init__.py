"""Knowledge types: one module per loss family, each registered under its ``type`` name.

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
from kdformer.knowledge.hidden import HiddenConfig, HiddenKnowledge
from kdformer.knowledge.logits import LogitsConfig, LogitsKnowledge

KnowledgeConfig = Annotated[
    LogitsConfig | HiddenConfig | AttentionConfig, Field(discriminator="type")
]

__all__ = [
    "KNOWLEDGE",
    "AttentionConfig",
    "AttentionKnowledge",
    "HiddenConfig",
    "HiddenKnowledge",
    "KnowledgeConfig",
    "KnowledgeTerm",
    "KnowledgeTermConfig",
    "LogitsConfig",
    "LogitsKnowledge",
    "ModelShape",
    "build_term",
    "register_knowledge",
]
