"""Efficient attention kdformer adds to ``transformers`` models (registered on import)."""

from kdformer.attention.local_global import (
    IMPLEMENTATION,
    local_global_attention,
    register,
    restore,
    use_local_global,
)

register()

__all__ = [
    "IMPLEMENTATION",
    "local_global_attention",
    "register",
    "restore",
    "use_local_global",
]
