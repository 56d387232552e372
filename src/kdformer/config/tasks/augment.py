"""TinyBERT-style data augmentation of the distillation training set."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from kdformer.config.base import Section


class AugmentConfig(Section):
    """TinyBERT-style augmentation of the distillation training set."""

    model: str = Field(
        ...,
        description="Masked language model that proposes replacements: hub name (e.g. "
        "bert-base-uncased), local folder or short name. Its tokenizer decides which words are "
        "single word pieces.",
    )
    variants: int = Field(20, gt=0, description="New texts per training example (TinyBERT: 20).")
    replace_prob: float = Field(
        0.4, gt=0, le=1, description="Chance that a replaceable word is replaced (TinyBERT: 0.4)."
    )
    top_k: int = Field(15, gt=0, description="Candidates per word from the MLM (TinyBERT: 15).")
    batch_size: int = Field(64, gt=0, description="Masked texts per MLM forward pass.")
    max_length: int = Field(128, gt=0, description="Tokens the MLM sees per text.")
    cache_dir: Path | None = Field(
        None,
        description="Where variants are cached (JSON lines, reused across runs). Unset: "
        "~/.cache/kdformer/augment.",
    )
