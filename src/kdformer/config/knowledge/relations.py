"""Self-attention relation knowledge (MiniLM, MiniLMv2)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from kdformer.config.knowledge.layers import LAYERS_DESCRIPTION, MapConfig, MatchStrategy


class ValueRelationConfig(MapConfig):
    """Value-relation distillation (MiniLM)."""

    term: ClassVar[str] = "kdformer.knowledge.relations:ValueRelationKnowledge"
    reads_qkv: ClassVar[bool] = True

    type: Literal["value_relation"] = Field("value_relation", description="Knowledge type name.")
    layers: MatchStrategy | list[tuple[int, int]] = Field(
        "last_only", description=LAYERS_DESCRIPTION + " MiniLM uses last_only."
    )
    heads: Literal["match", "average"] = Field(
        "match",
        description="match: head i <-> head i, teacher heads regrouped (their relations averaged) "
        "when the teacher has k times the student's heads; average: compare head-averaged "
        "relations.",
    )


class QKVRelationsConfig(MapConfig):
    """Multi-head self-attention relation distillation (MiniLMv2)."""

    term: ClassVar[str] = "kdformer.knowledge.relations:QKVRelationsKnowledge"
    reads_qkv: ClassVar[bool] = True

    type: Literal["qkv_relations"] = Field("qkv_relations", description="Knowledge type name.")
    layers: MatchStrategy | list[tuple[int, int]] = Field(
        "last_only", description=LAYERS_DESCRIPTION + " MiniLMv2 uses last_only."
    )
    relations: list[Literal["qq", "kk", "vv"]] = Field(
        default_factory=lambda: ["qq", "kk", "vv"],
        description="Which relations: qq (query-query), kk (key-key), vv (value-value); their "
        "KLs are summed.",
    )
    relation_heads: int = Field(
        8,
        gt=0,
        description="Relation heads the concatenated Q/K/V vectors are split into; must divide "
        "both widths. 8 divides every common width (128, 256, 312, 384, 512, 768, 1024); MiniLMv2 "
        "used 48 for base-size and 64 for large-size teachers.",
    )

    @field_validator("relations")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("relations must name at least one of qq, kk, vv")
        if len(set(value)) != len(value):
            raise ValueError(f"relations lists a relation twice: {value}")
        return value
