"""The conversion of each target, derived from the configuration's registry
(:data:`kdformer.config.convert.CONVERT_TARGETS`, whose ``implementation`` paths name them),
and a target's options checked and completed by :class:`~kdformer.config.ConvertConfig`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kdformer.config.base import ConfigError, import_path
from kdformer.config.convert import CONVERT_TARGETS, ConvertConfig
from kdformer.config.messages import format_validation_error
from kdformer.conversion.base import Conversion

CONVERSIONS: dict[str, Conversion] = {
    name: import_path(entry.implementation)() for name, entry in CONVERT_TARGETS.items()
}
"""Each target's conversion by ``convert.to`` name."""


def conversion_of(target: str) -> Conversion:
    """The conversion to ``target``; a ConfigError listing the valid ones otherwise."""
    if target not in CONVERSIONS:
        raise ConfigError(f"unknown conversion target '{target}'; valid: {', '.join(CONVERSIONS)}")
    return CONVERSIONS[target]


def target_options(target: str, max_length: int, options: dict[str, Any]) -> dict[str, Any]:
    """The options of ``target``: the given ones checked by the ``convert:`` section's rules,
    the rest its defaults (options of other targets are accepted and left out)."""
    conversion_of(target)
    try:
        section = ConvertConfig(to=target, max_length=max_length, **options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, ConvertConfig, "the conversion")) from exc
    return section.options()
