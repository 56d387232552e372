"""In-batch similarity knowledge: the student's sentence-by-sentence similarities learn the
teacher's."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdformer.config.knowledge.pooled import PooledConfig


class SimilarityConfig(PooledConfig):
    """Similarity-structure distillation (the batch's cosine matrix)."""

    term: ClassVar[str] = "kdformer.knowledge.similarity:SimilarityKnowledge"

    type: Literal["similarity"] = Field("similarity", description="Knowledge type name.")
    loss: Literal["mse", "kl"] = Field(
        "mse",
        description="mse: mean squared difference of the two cosine matrices over the pairs of "
        "different sentences (similarity-preserving KD, Tung and Mori 2019); kl: KL(teacher || "
        "student) between each sentence's softmax over its cosines with the other sentences at "
        "`temperature` (which of them is nearest, as a contrastive loss sees the batch).",
    )
    temperature: float = Field(
        0.05,
        gt=0,
        description="kl only: the softmax temperature over cosines (0.05, as SimCSE's "
        "contrastive loss; cosines lie in [-1, 1], so T=1 would give near-uniform rows).",
    )
