"""Convert a full-attention BERT/RoBERTa encoder into an efficient-attention one with the same
weights: Longformer, BigBird, Nyströmformer, or kdformer's local + global block attention.

What is copied: word, token-type and position embeddings and their LayerNorm; every layer's
query/key/value, attention output, feed-forward and LayerNorms; the pooler. Position embeddings
are extended to ``max_length`` tokens by repeating the learned ones (Longformer's recipe: row
``p`` takes the source's row ``p mod source length``), each target keeping its own position
offset (RoBERTa and Longformer count from the padding index + 1, Nyströmformer from 2).
Longformer's global projections start as copies of the local ones; Nyströmformer's per-head
convolution starts at zero, so it adds nothing until trained. These rules are the target
families' (:class:`kdformer.families.ModelFamily`); each target is one module of this package,
registered by name in :data:`kdformer.config.convert.CONVERT_TARGETS`.

Only the encoder is converted: task heads (and MLM heads) differ between these classes, so
the converted model is fine-tuned on the task next (``kdformer run`` with a ``convert:``
section does both). On inputs shorter than the efficient pattern (within Longformer's window,
BigBird's full-attention fallback, one Nyströmformer landmark per token, two local + global
blocks) the converted model gives the source model's outputs (tested).
"""

from __future__ import annotations

from typing import Any

from kdformer.config.convert import TARGET_NAMES, Target
from kdformer.conversion.base import SOURCES, Conversion
from kdformer.conversion.converter import (
    check_output_folder,
    convert,
    convert_checkpoint,
    dropped_heads,
    dropped_positions,
    target_config,
)
from kdformer.conversion.registry import CONVERSIONS, conversion_of
from kdformer.families import family_of

TARGETS: tuple[str, ...] = TARGET_NAMES
"""Every target's name; ``full`` keeps full attention and only extends the positions."""


def position_offset(config: Any) -> int:
    """Row of the position embedding that the first token uses (the model family's rule, which
    :func:`kdformer.families.position_limit` reads too)."""
    return family_of(config).position_offset(config)


__all__ = [
    "CONVERSIONS",
    "SOURCES",
    "TARGETS",
    "Conversion",
    "Target",
    "check_output_folder",
    "conversion_of",
    "convert",
    "convert_checkpoint",
    "dropped_heads",
    "dropped_positions",
    "position_offset",
    "target_config",
]
