"""``bigbird``: BigBird's block-sparse attention (sliding, global and random blocks), which
``transformers`` runs as full attention on inputs too short for the blocks
(:class:`kdformer.families.bigbird.BigBirdFamily`)."""

from __future__ import annotations

from typing import Any

import transformers

from kdformer.config.base import ConfigError
from kdformer.conversion.base import Conversion, common_settings


class BigBirdConversion(Conversion):
    """Block-sparse attention of ``block_size`` tokens per block."""

    def make_config(
        self, source: Any, max_length: int, *, block_size: int, num_random_blocks: int
    ) -> Any:
        """Refuses sizes whose block-sparse minimum is not below ``max_length``: such a model
        would run full attention on every input it takes (and every run refuses it)."""
        minimum = (5 + 2 * num_random_blocks) * block_size
        if max_length <= minimum:
            most = (max_length - 1) // (5 + 2 * num_random_blocks)
            raise ConfigError(
                f"BigBird runs block-sparse attention only on inputs longer than (5 + 2 x "
                f"num_random_blocks {num_random_blocks}) x block_size {block_size} = {minimum} "
                f"tokens, and max_length {max_length} is not: the converted model would fall "
                "back to full attention on every input it takes. Raise max_length above "
                f"{minimum}, or lower block_size"
                + (f" to at most {most}" if most > 0 else "")
                + " or num_random_blocks"
            )
        return transformers.BigBirdConfig(
            **common_settings(source),
            attention_type="block_sparse",
            block_size=block_size,
            num_random_blocks=num_random_blocks,
        )
