"""``local_global``: the source's own class running kdformer's local + global block attention
(:mod:`kdformer.attention.local_global`), its settings recorded in the config."""

from __future__ import annotations

from typing import Any

from torch import nn

from kdformer.attention import use_local_global
from kdformer.attention.local_global import BLOCK_SIZE_KEY, GLOBAL_TOKENS_KEY
from kdformer.conversion.full import FullConversion


class LocalGlobalConversion(FullConversion):
    """The full conversion plus the block attention's settings, switched on when done."""

    def make_config(
        self, source: Any, max_length: int, *, block_size: int, global_tokens: int
    ) -> Any:
        config = super().make_config(source, max_length)
        setattr(config, BLOCK_SIZE_KEY, block_size)
        setattr(config, GLOBAL_TOKENS_KEY, global_tokens)
        return config

    def finish(self, model: nn.Module) -> None:
        """Run the block attention the config records (a saved copy records it too)."""
        config = model.config
        use_local_global(model, getattr(config, BLOCK_SIZE_KEY), getattr(config, GLOBAL_TOKENS_KEY))
