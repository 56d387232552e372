"""Fields every knowledge term has."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from kdformer.config.base import Section


class KnowledgeTermConfig(Section):
    """Fields every knowledge term has; subclasses add a ``type`` literal and their own."""

    term: ClassVar[str]
    """Where the loss term's code lives, ``"package.module:Class"`` (imported only when a term
    is built, so configuration never loads torch)."""
    reads_qkv: ClassVar[bool] = False
    """Whether the term reads per-layer query/key/value projections (families that cannot
    supply them refuse it)."""
    model_agnostic: ClassVar[bool] = False
    """Whether the term reads only task outputs and hidden states, which every transformers
    model gives: such a term works with models of no declared family."""

    weight: float = Field(1.0, ge=0, description="Weight of this term in the total loss.")
    teacher: str | None = Field(
        None,
        description="With several teachers (distill.teachers): main, a teacher's id, each (one "
        "term per teacher, each with its own projections) or, for logits only, all (the weighted "
        "mix of every teacher's soft labels). Default: all for logits, main for the rest.",
    )
