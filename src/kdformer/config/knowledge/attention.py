"""Attention-map knowledge (TinyBERT, MiniLM)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdformer.config.knowledge.layers import MapConfig


class AttentionConfig(MapConfig):
    """Attention distillation."""

    term: ClassVar[str] = "kdformer.knowledge.attention:AttentionKnowledge"
    reads_qkv: ClassVar[bool] = True

    type: Literal["attention"] = Field("attention", description="Knowledge type name.")
    loss: Literal["kl", "mse"] = Field(
        "kl",
        description="kl: KL between attention distributions (MiniLM); mse: MSE between pre-softmax "
        "attention scores, padded keys set to 0 (TinyBERT).",
    )
    heads: Literal["match", "average"] = Field(
        "match",
        description="match: head i <-> head i, teacher heads regrouped (averaged) when the "
        "teacher has k times the student's heads; average: compare head-averaged maps.",
    )
