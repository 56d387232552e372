"""Hidden-state knowledge."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdformer.config.knowledge.layers import (
    PROJECTION_DESCRIPTION,
    LayerMatchedConfig,
    ProjectionMode,
)


class HiddenConfig(LayerMatchedConfig):
    """Hidden-state distillation."""

    term: ClassVar[str] = "kdformer.knowledge.hidden:HiddenKnowledge"
    model_agnostic: ClassVar[bool] = True

    type: Literal["hidden"] = Field("hidden", description="Knowledge type name.")
    loss: Literal["mse", "cosine", "pkd"] = Field(
        "mse",
        description="mse (TinyBERT), cosine (DistilBERT) or pkd (BERT-PKD: squared distance of "
        "the L2-normalised first-token vectors).",
    )
    include_embeddings: bool = Field(
        False, description="Also match the embedding outputs (0 <-> 0)."
    )
    projection: ProjectionMode = Field("auto", description=PROJECTION_DESCRIPTION)
