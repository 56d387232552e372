"""The teacher-output cache: where entries live and how they are stored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from kdformer.config.base import Section


def default_cache_dir() -> Path:
    """``$KDFORMER_CACHE_DIR``, else ``~/.cache/kdformer/teacher-outputs``: one place, so every
    run, study and review of a teacher on the same data shares its entry."""
    return Path(os.environ.get("KDFORMER_CACHE_DIR") or "~/.cache/kdformer/teacher-outputs")


class TeacherCacheConfig(Section):
    """Offline distillation: the teacher's outputs computed once and read back every epoch."""

    enabled: bool = Field(
        False,
        description="Run the teacher once over the training data, store what the objective "
        "reads (safetensors shards, memory-mapped) and read it back in every epoch, run and "
        "study arm. Entries are keyed by the teacher's weights, the tokenizer, the data, "
        "max_length and the stored items: a change is a new entry, never a stale one.",
    )
    dir: Path | None = Field(
        None,
        description="Cache root (default: $KDFORMER_CACHE_DIR or ~/.cache/kdformer/"
        "teacher-outputs, shared by all runs).",
    )
    dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16", description="Storage dtype of the cached tensors (read back as float32)."
    )
    topk: int | None = Field(
        None,
        gt=0,
        description="Keep only the k largest logits per row (the rest read back as far below "
        "them: probability 0). For large output layers such as a masked LM's vocabulary; "
        "needs the kl logits loss.",
    )
    max_gb: float = Field(
        20.0, gt=0, description="The most one cache entry may grow to; checked before writing."
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``dir: ""`` means the default, as an empty $KDFORMER_CACHE_DIR does: read as a
        path it would be ``.``, scattering entries over the folder kdformer runs from."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def root(self) -> Path:
        return (self.dir or default_cache_dir()).expanduser()
