"""Model families: one declaration per architecture of where its modules live and what it can
supply (see :mod:`kdformer.families.base`). Importing this package registers them all."""

from kdformer.families import (  # noqa: F401  (registers each family)
    bert,
    bigbird,
    deberta,
    distilbert,
    longformer,
    modernbert,
    nystromformer,
)
from kdformer.families.base import (
    ALL_KNOWLEDGE,
    ModelFamily,
    Sliced,
    Tap,
    check_models,
    families,
    family_of,
    find_family,
    intermediate_size_of,
    position_limit,
    register_family,
)

__all__ = [
    "ALL_KNOWLEDGE",
    "ModelFamily",
    "Sliced",
    "Tap",
    "check_models",
    "families",
    "family_of",
    "find_family",
    "intermediate_size_of",
    "position_limit",
    "register_family",
]
