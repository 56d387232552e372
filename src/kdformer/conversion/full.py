"""``full``: the source's own class with full attention, positions extended only (the
full-attention reference of a review)."""

from __future__ import annotations

from typing import Any

from torch import nn

from kdformer.conversion.base import Conversion


class FullConversion(Conversion):
    """A copy of the source's config and class; only the positions change."""

    def make_config(self, source: Any, max_length: int) -> Any:
        return type(source).from_dict(source.to_dict())

    def model(self, source: nn.Module, config: Any) -> nn.Module:
        """The source's class, with a pooler when the source has one."""
        return type(source)(config, add_pooling_layer=getattr(source, "pooler", None) is not None)
