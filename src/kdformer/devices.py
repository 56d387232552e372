"""Where models run and write: the one place a configured device name becomes a
``torch.device``, and the free disk a run checks before it writes.

Configuration checks only the spelling (it loads no torch); whether this machine has the
device is checked here, when a command starts and before any long work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from kdformer.config.base import ConfigError


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU) or a named device this machine has;
    a ConfigError otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"'{device}' is not a device: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device '{device}' asks for CUDA, which this machine lacks: use auto or cpu"
        )
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device '{device}': this machine has {torch.cuda.device_count()} GPU(s)")
    return resolved


def free_disk_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as a folder to write into (it is a file, lies below a
    file, or its nearest existing parent is read-only for this user, a read-only file system
    included), or None. It need not exist yet."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{path} cannot be created: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{path} cannot be written: {existing} is read-only for this user"
    return None
