"""Fields of the terms that compare features layer by layer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kdformer.config.knowledge.base import KnowledgeTermConfig

MatchStrategy = Literal["uniform", "first", "last", "last_only", "many_to_one"]


LAYERS_DESCRIPTION = (
    "Layer matching (1-based; 0 is the embedding output): uniform (TinyBERT m*k, last to last), "
    "first, last, last_only (only last student <-> last teacher, MiniLM), many_to_one (each "
    "student layer <-> learned softmax mix of `window` teacher layers centred on its uniform "
    "target), or explicit (student, teacher) pairs such as [[1, 2], [2, 4]]."
)


CHUNK_DESCRIPTION = (
    "Query rows per chunk when building seq x seq maps (bounded memory at long lengths; the "
    "loss is the same). Unset: as many rows as keep one map within 2^24 elements (one chunk, "
    "no recomputation, for short inputs)."
)


ProjectionMode = Literal["auto", "per_layer", "shared", "none"]


PROJECTION_DESCRIPTION = (
    "Student->teacher width projection: auto (per-layer linear only when widths differ), "
    "per_layer, shared (one for all layers), none (widths must be equal)."
)


class LayerMatchedConfig(KnowledgeTermConfig):
    """Fields of every term that compares features layer by layer."""

    layers: MatchStrategy | list[tuple[int, int]] = Field("uniform", description=LAYERS_DESCRIPTION)
    window: int = Field(
        3,
        ge=1,
        description="many_to_one only: teacher layers per student layer (odd; clipped at the "
        "ends of the teacher). 1 equals uniform.",
    )

    @field_validator("window")
    @classmethod
    def _odd_window(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"window must be odd (centred on the uniform target), not {value}")
        return value


class MapConfig(LayerMatchedConfig):
    """Fields of the terms that build seq x seq maps (attention, relations)."""

    query_chunk: int | None = Field(None, gt=0, description=CHUNK_DESCRIPTION)
