"""``bigbird``: BigBird's block-sparse attention (sliding, global and random blocks), which
``transformers`` runs as full attention on inputs too short for the blocks
(:class:`kdformer.families.bigbird.BigBirdFamily`)."""

from __future__ import annotations

from typing import Any

import transformers

from kdformer.conversion.base import Conversion, common_settings


class BigBirdConversion(Conversion):
    """Block-sparse attention of ``block_size`` tokens per block."""

    def make_config(
        self, source: Any, max_length: int, *, block_size: int, num_random_blocks: int
    ) -> Any:
        return transformers.BigBirdConfig(
            **common_settings(source),
            attention_type="block_sparse",
            block_size=block_size,
            num_random_blocks=num_random_blocks,
        )
