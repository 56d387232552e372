"""Sentence-embedding knowledge: the student's sentence vector learns the teacher's."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from kdformer.config.knowledge.pooled import PooledConfig


class SentenceEmbeddingConfig(PooledConfig):
    """Sentence-embedding distillation (Reimers and Gurevych, 2020)."""

    term: ClassVar[str] = "kdformer.knowledge.sentence_embedding:SentenceEmbeddingKnowledge"

    type: Literal["sentence_embedding"] = Field(
        "sentence_embedding", description="Knowledge type name."
    )
    loss: list[Literal["cosine", "mse"]] = Field(
        default_factory=lambda: ["cosine", "mse"],
        description="Losses summed: cosine (1 - cosine similarity of the two sentence vectors: "
        "their direction, all that a normalised embedding keeps) and mse (mean squared error "
        "over sentences and features of the pooled vectors before any normalisation: their "
        "length too).",
    )
    projection: Literal["auto", "linear", "none"] = Field(
        "auto",
        description="Student->teacher width projection of the sentence vector: auto (linear only "
        "when widths differ), linear (always), none (widths must be equal). It trains with the "
        "student and is not saved with it.",
    )

    @field_validator("loss", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        """A single loss name is a list of one; each at most once."""
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            if not value:
                raise ValueError("loss must name at least one of cosine, mse")
            if len(set(value)) != len(value):
                raise ValueError(f"loss lists a loss twice: {value}")
        return value
