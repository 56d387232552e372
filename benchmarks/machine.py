"""The machine a benchmark ran on, described the same way by every ``bench_*.py``.

The benchmarks run as scripts (``python benchmarks/bench_x.py``), so their folder is on
``sys.path`` and they import this module as ``from machine import describe_machine``.

:func:`describe_machine` imports torch (for its thread count and GPU), so a benchmark that
measures its own process's memory or import time calls it after measuring.
"""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    """Total physical memory in GiB (Linux: /proc/meminfo; elsewhere: sysconf), or None."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, OSError, ValueError):
        return None


def load_average() -> list[float] | None:
    """1/5/15-minute load: a busy shared CPU shows here and distorts every timing."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(device: str | None = None) -> dict[str, Any]:
    """Hardware, software versions and date of a benchmark run, as a JSON-ready dict.

    ``device``: what the benchmark ran on when the caller chose it (e.g. ``"cuda"``); by
    default the first GPU when torch sees one, else ``"cpu"``. The keys are those
    ``distill.json`` has always had, plus ``ram_gib``, ``device``, ``date`` and ``load_average``.
    """
    import torch
    import transformers

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if device is None:
        device = "cuda" if cuda else "cpu"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": ram_gib(),
        "cuda": cuda,
        "device": f"{device} ({cuda})" if device.startswith("cuda") and cuda else device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "kdformer": version("kdformer"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average": load_average(),
    }


def machine_line(machine: dict[str, Any] | str) -> str:
    """One line for a Markdown report. Older result files hold a plain string (kept as is) or
    a dict without the newer keys (left out)."""
    if isinstance(machine, str):
        return machine
    ram = f", {machine['ram_gib']} GiB RAM" if machine.get("ram_gib") else ""
    gpu = f", GPU {machine['cuda']}" if machine.get("cuda") else ", no GPU"
    device = f"; device {machine['device']}" if machine.get("device") else ""
    date = f"; {machine['date']}" if machine.get("date") else ""
    return (
        f"{machine['cpu_count']} CPUs ({machine['cpus_usable']} usable, {machine['cpu_model']})"
        f"{ram}, {machine['torch_threads']} torch threads{gpu}{device}; "
        f"Python {machine['python']}, torch {machine['torch']}, transformers "
        f"{machine['transformers']}, kdformer {machine.get('kdformer')}{date}"
    )
