"""Converting a full-attention teacher to efficient attention (convert-then-distill)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kdformer.config.base import Section


class ConvertConfig(Section):
    """Convert the teacher to efficient attention before fine-tuning (convert-then-distill)."""

    to: Literal["full", "longformer", "bigbird", "nystromformer", "local_global"] = Field(
        ...,
        description="Efficient attention to convert the full-attention teacher to (full: keep "
        "full attention, extend the positions only).",
    )
    max_length: int = Field(4096, gt=0, description="Positions of the converted teacher.")
    window: int = Field(512, gt=0, description="longformer: attention window (even).")
    block_size: int = Field(
        64, gt=0, description="bigbird: block size; local_global: tokens per block."
    )
    num_random_blocks: int = Field(3, ge=0, description="bigbird: random blocks per query block.")
    num_landmarks: int = Field(64, gt=0, description="nystromformer: landmarks.")
    segment_length: int | None = Field(
        None,
        gt=0,
        description="nystromformer: the one input length it trains on (inputs are padded to "
        "it; task.max_length must fit). Unset: max_length.",
    )
    global_tokens: int = Field(1, ge=0, description="local_global: leading global tokens.")

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`kdformer.conversion.convert` for this target."""
        return {
            "longformer": {"window": self.window},
            "bigbird": {"block_size": self.block_size, "num_random_blocks": self.num_random_blocks},
            "nystromformer": {
                "num_landmarks": self.num_landmarks,
                "segment_length": self.segment_length,
            },
            "local_global": {"block_size": self.block_size, "global_tokens": self.global_tokens},
            "full": {},
        }[self.to]
