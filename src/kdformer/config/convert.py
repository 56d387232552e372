"""Converting a full-attention teacher to efficient attention (convert-then-distill), and the
registry of conversion targets, :data:`CONVERT_TARGETS`: one entry per target, from which
``convert.to``'s values, each option field's description (so ``docs/config.md``), the options
of ``kdformer convert`` and :data:`kdformer.conversion.CONVERSIONS` are all derived. Adding a
target: its entry here (plus a field for any new option) and its module in
``kdformer/conversion/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from kdformer.config.base import Section


@dataclass(frozen=True)
class ConvertTarget:
    """One conversion target: what it gives, the :class:`ConvertConfig` option fields it reads
    (with what each means for it), and where its torch code lives (imported only when
    converting, so configuration never loads torch)."""

    summary: str
    options: dict[str, str] = field(default_factory=dict)
    """Option field -> what it sets for this target (shown in the docs and ``--help``)."""
    implementation: str = ""
    """``"package.module:Class"`` of its :class:`kdformer.conversion.base.Conversion`."""
    load_note: str = ""
    """How to load the converted model when plain ``AutoModel.from_pretrained`` is not enough."""


CONVERT_TARGETS: dict[str, ConvertTarget] = {
    "full": ConvertTarget(
        "full attention with the positions extended only, a review's reference",
        implementation="kdformer.conversion.full:FullConversion",
    ),
    "longformer": ConvertTarget(
        "sliding window, the first token global",
        {"window": "attention window (even; w/2 each side)"},
        "kdformer.conversion.longformer:LongformerConversion",
    ),
    "bigbird": ConvertTarget(
        "block-sparse sliding, global and random blocks",
        {"block_size": "block size", "num_random_blocks": "random blocks per query block"},
        "kdformer.conversion.bigbird:BigBirdConversion",
    ),
    "nystromformer": ConvertTarget(
        "landmark attention at one fixed input length",
        {
            "num_landmarks": "landmarks (they divide the input length)",
            "segment_length": "the one input length it trains on (inputs are padded to it; "
            "task.max_length must fit), unset: max_length",
            "conv_kernel_size": "kernel of the per-head convolution over values (starts at "
            "zero, so adds nothing until trained)",
        },
        "kdformer.conversion.nystromformer:NystromformerConversion",
    ),
    "local_global": ConvertTarget(
        "kdformer's local + global blocks in the source's own class",
        {"block_size": "tokens per block", "global_tokens": "leading tokens with global attention"},
        "kdformer.conversion.local_global:LocalGlobalConversion",
        load_note='load with attn_implementation="kdformer_local_global" after '
        "`import kdformer.attention`",
    ),
}
"""Every conversion target by ``convert.to`` name; the first is the full-attention reference."""

TARGET_NAMES: tuple[str, ...] = tuple(CONVERT_TARGETS)

Target = Literal[TARGET_NAMES]  # type: ignore[valid-type]
"""A conversion target's name (the registry's keys)."""


def option_description(name: str) -> str:
    """An option field's description: what it means for each target that reads it."""
    meanings = [
        f"{t}: {entry.options[name]}"
        for t, entry in CONVERT_TARGETS.items()
        if name in entry.options
    ]
    return "; ".join(meanings) + "."


def targets_description() -> str:
    """The ``to`` field's description: every target and what it gives."""
    listed = "; ".join(f"{name}: {entry.summary}" for name, entry in CONVERT_TARGETS.items())
    return f"Attention to convert the full-attention model to. {listed}."


class ConvertConfig(Section):
    """Convert the teacher to efficient attention before fine-tuning (convert-then-distill)."""

    to: Target = Field(..., description=targets_description())
    max_length: int = Field(4096, gt=0, description="Positions of the converted model (tokens).")
    window: int = Field(512, gt=0, description=option_description("window"))
    block_size: int = Field(64, gt=0, description=option_description("block_size"))
    num_random_blocks: int = Field(3, ge=0, description=option_description("num_random_blocks"))
    num_landmarks: int = Field(64, gt=0, description=option_description("num_landmarks"))
    segment_length: int | None = Field(None, gt=0, description=option_description("segment_length"))
    conv_kernel_size: int = Field(35, gt=0, description=option_description("conv_kernel_size"))
    global_tokens: int = Field(1, ge=0, description=option_description("global_tokens"))

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`kdformer.conversion.convert` for this target: the
        fields its registry entry names."""
        return {name: getattr(self, name) for name in CONVERT_TARGETS[self.to].options}
