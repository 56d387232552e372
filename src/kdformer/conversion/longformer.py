"""``longformer``: Longformer's sliding-window attention. Its global query/key/value
projections start as copies of the local ones, and its first token gets global attention
(:class:`kdformer.families.longformer.LongformerFamily`)."""

from __future__ import annotations

from typing import Any

import transformers

from kdformer.config.base import ConfigError
from kdformer.conversion.base import Conversion, common_settings


class LongformerConversion(Conversion):
    """One attention window for every layer."""

    def make_config(self, source: Any, max_length: int, *, window: int) -> Any:
        if window < 4 or window % 2:
            raise ConfigError(
                f"Longformer's attention window must be a positive even number of tokens "
                f"(w/2 each side), at least 4 (a window of 2 fails at the first forward), not "
                f"{window}"
            )
        return transformers.LongformerConfig(**common_settings(source), attention_window=window)
