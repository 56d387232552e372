"""Where models run: the one place a configured device name becomes a ``torch.device``.

Configuration checks only the spelling (it loads no torch); whether this machine has the
device is checked here, when a command starts and before any long work."""

from __future__ import annotations

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
