"""The base every config section derives from, and the two errors users meet: a bad setting
(:class:`ConfigError`) and bad data (:class:`DataError`). Nothing here imports torch."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message names the problem and the fix."""


class DataError(ValueError):
    """Bad data input; message names the problem (file path, line, columns found, ...) and the fix."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def import_path(path: str) -> Any:
    """The object a ``"package.module:Name"`` path names: how a config class points at the code
    it configures without importing it (so configuration never loads torch)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
