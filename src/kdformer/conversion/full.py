"""``full``: the source's own class with full attention, positions extended only (the
full-attention reference of a review)."""

from __future__ import annotations

from typing import Any

from torch import nn

from kdformer.attention.local_global import BLOCK_SIZE_KEY, GLOBAL_TOKENS_KEY
from kdformer.conversion.base import Conversion


class FullConversion(Conversion):
    """A copy of the source's config and class; only the positions change."""

    def make_config(self, source: Any, max_length: int) -> Any:
        """The source's config without local + global settings: a source converted to
        local_global before keeps plain BERT weights, and its settings left in would switch
        the "full" copy back to block attention whenever kdformer loads it."""
        settings = source.to_dict()
        for key in (BLOCK_SIZE_KEY, GLOBAL_TOKENS_KEY):
            settings.pop(key, None)
        return type(source).from_dict(settings)

    def model(self, source: nn.Module, config: Any) -> nn.Module:
        """The source's class, with a pooler when the source has one."""
        return type(source)(config, add_pooling_layer=getattr(source, "pooler", None) is not None)
