"""Feed-forward intermediate knowledge."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdformer.config.knowledge.layers import (
    PROJECTION_DESCRIPTION,
    LayerMatchedConfig,
    ProjectionMode,
)


class IntermediateConfig(LayerMatchedConfig):
    """Feed-forward intermediate distillation."""

    term: ClassVar[str] = "kdformer.knowledge.intermediate:IntermediateKnowledge"

    type: Literal["intermediate"] = Field("intermediate", description="Knowledge type name.")
    projection: ProjectionMode = Field(
        "auto", description=PROJECTION_DESCRIPTION.replace("widths", "intermediate widths")
    )
