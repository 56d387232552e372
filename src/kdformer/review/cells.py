"""Finished review cells, kept beside the review's tables (``<output_dir>/cells/<task>__<arch>.json``)
so that a review split over sessions trains only what is missing: a fresh clone has no runs
folder, and a CPU review of teachers trained to their plateau takes longer than one session.

A cell records its quality figures and training records, a digest of the run config it came
from (a cell whose config changed since is trained again) and both models' architectures
(their ``config.json``). Where the trained weights are not on this machine, the review times
models rebuilt from those architectures with fresh weights: speed and memory depend on the
shapes, not on the values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kdformer.config.experiment import ExperimentConfig
from kdformer.pipeline.outputs import Paths

CELLS_FOLDER = "cells"
ROLES = ("teacher", "student")


def cell_path(output_dir: Path, task: str, architecture: str) -> Path:
    return Path(output_dir) / CELLS_FOLDER / f"{task}__{architecture}.json"


def config_digest(config: ExperimentConfig) -> str:
    """What the cell's result depends on: the settings its run config gives (defaults left
    out, so a kdformer that adds a setting keeps earlier cells), less where it was written."""
    settings = config.model_dump(mode="json", exclude={"output_dir"}, exclude_unset=True)
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def read_cell(path: Path, digest: str) -> dict[str, Any] | None:
    """The published cell, or None when there is none, it is half-written, or it came from
    another run config (the digests differ)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("config_digest") != digest:
        return None
    return record["cell"]


def publish_cell(path: Path, cell: dict[str, Any], digest: str, run: Path) -> None:
    """Write a finished cell with its models' architectures (through a scratch file, so a
    reader never sees half of one)."""
    paths = Paths(run)
    architectures = {
        role: json.loads((getattr(paths, role) / "config.json").read_text(encoding="utf-8"))
        for role in ROLES
    }
    record = {"config_digest": digest, "cell": {**cell, "architectures": architectures}}
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    scratch.replace(path)


def has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def rebuild(cell: dict[str, Any], role: str, model_class: Any, folder: Path) -> Path:
    """Save a model of the cell's published ``role`` architecture with fresh weights into
    ``folder`` (for timing and memory where the trained weights are elsewhere)."""
    import torch
    from transformers import AutoConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cell["architectures"][role]), encoding="utf-8")
    torch.manual_seed(0)
    model = model_class.from_config(AutoConfig.from_pretrained(folder))
    model.save_pretrained(folder)
    return folder
