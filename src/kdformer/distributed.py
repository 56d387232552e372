"""Several processes (``torchrun`` / ``accelerate launch``): which one writes, and waiting for it.

Training shards the data across processes through the library's Trainer; everything else a
stage does on disk (configs, saved models, the teacher's evaluation, the teacher cache,
reports) is done by the main process while the others wait, so no two processes write one
file. In a single process every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def process_count() -> int:
    """Processes launched for this job (``WORLD_SIZE``; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def state() -> Any:
    """The shared ``accelerate`` process state. On a machine without an accelerator it is the
    multi-CPU (gloo) state: transformers would otherwise treat each CPU process as a job of
    its own and train unsharded copies."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.accelerator.is_available())


def is_main() -> bool:
    return process_count() == 1 or state().is_main_process


def wait() -> None:
    """Block until every process gets here."""
    if process_count() > 1:
        state().wait_for_everyone()


@contextmanager
def main_first() -> Iterator[None]:
    """Run the block in the main process first, then in the others (which then find what it
    wrote: a cache entry, a stored evaluation)."""
    if process_count() == 1:
        yield
        return
    with state().main_process_first():
        yield


def training_device(use_cpu: bool = False) -> Any:
    """The device this process trains on (its own GPU under a multi-GPU launch)."""
    import torch

    if use_cpu or not torch.accelerator.is_available():
        return torch.device("cpu")
    if process_count() > 1:
        return state().device
    return torch.accelerator.current_accelerator()
