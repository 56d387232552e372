"""``kdformer review REVIEW.yaml``: the performance review of efficient-attention distillation
(Brown et al., 2023), for any architectures and tasks.

For each task and architecture, one convert-then-distill run (the base experiment with a
``convert:`` section: ``to: full`` for the full-attention reference, which only extends the
positions): the converted teacher is fine-tuned on the task and distilled into the student the
base experiment describes (half depth, initialised from the teacher's layers). Then, per task,
every teacher and student is timed at each length (round-robin in one process, batch
``latency_batch_size``, median of ``latency_repeats``) and its peak inference memory measured
in a fresh process (:mod:`kdformer.report.memory`). Writes ``review.json``, ``review.md``,
``latency.png`` (latency vs length) and ``retention_speedup.png`` (retention vs speed-up at
the longest length). Runs that finished are reused (the run pipeline skips finished stages),
and so are cells published in ``<output_dir>/cells/`` by an earlier session
(:mod:`kdformer.review.cells`): a review can be run in parts, committing each finished cell.

Limits: one seed per run; latency on the machine it runs on (``report.device``); a BigBird
length at or under its block-sparse minimum is flagged (transformers runs full attention
there); Nyströmformer is timed with its landmarks following each length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdformer import pipeline
from kdformer.config.base import ConfigError
from kdformer.config.loading import load_config
from kdformer.config.review import ReviewArchitecture, ReviewConfig, ReviewTask
from kdformer.devices import folder_problem
from kdformer.families import find_family
from kdformer.models import load_model
from kdformer.pipeline.outputs import Paths
from kdformer.report.measure import measure_latencies
from kdformer.report.memory import forward_peak_mib
from kdformer.review.cells import (
    ROLES,
    cell_path,
    config_digest,
    has_weights,
    publish_cell,
    read_cell,
    rebuild,
)
from kdformer.review.tables import write_review
from kdformer.tasks import build_task


def run_config(review: ReviewConfig, folder: Path, task: ReviewTask, arch: ReviewArchitecture):
    """The experiment of one (task, architecture) cell."""
    convert = arch.convert
    if "max_length" not in convert.model_fields_set:
        convert = convert.model_copy(update={"max_length": max(review.lengths)})
    overrides = [
        *review.overrides,
        *task.overrides,
        f"output_dir={(review.runs_dir or review.output_dir / 'runs') / task.name / arch.name}",
        f"convert={json.dumps(convert.model_dump(mode='json'))}",
    ]
    return load_config(folder / review.base, overrides)


def run_review(
    review: ReviewConfig, folder: Path, overwrite: bool = False, resume: bool = False
) -> dict[str, Any]:
    """Every run (validated first, then trained), the speed and memory measurements, and the
    outputs; returns the review's JSON."""

    problem = folder_problem(review.output_dir)
    if problem is not None:  # found after every run otherwise, when the tables are written
        raise ConfigError(
            f"output_dir {problem}: the review writes its tables and plots into that folder; "
            "choose an output_dir you can write to"
        )
    configs = {
        (t.name, a.name): run_config(review, folder, t, a)
        for t in review.tasks
        for a in review.architectures
    }
    for config in configs.values():  # every mistake before any training
        pipeline.validate(config, pipeline.default_stages(config))
    cells = []
    for (task_name, arch), config in configs.items():
        published = cell_path(review.output_dir, task_name, arch)
        digest = config_digest(config)
        cell = None if overwrite else read_cell(published, digest)
        if cell is None:
            cell = run_cell(config, task_name, arch, overwrite, resume)
            publish_cell(published, cell, digest, Path(config.output_dir))
            cell = read_cell(published, digest)
        cells.append(cell)
    for task in review.tasks:
        measure_task(review, [c for c in cells if c["task"] == task.name], configs)
    result = {"lengths": review.lengths, "reference": review.reference, "cells": cells}
    write_review(review, result)
    return result


def run_cell(
    config: Any, task_name: str, arch: str, overwrite: bool, resume: bool
) -> dict[str, Any]:
    """Train one cell (the run pipeline skips its finished stages) and read its quality."""
    report = pipeline.run(config, overwrite=overwrite, resume=resume)
    assert report is not None
    rows = {m["name"]: m for m in report["models"]}
    return {
        "task": task_name,
        "architecture": arch,
        "main_metric": report["main_metric"],
        "teacher_metric": rows["teacher"]["metrics"][report["main_metric"]],
        "student_metric": rows["student"]["metrics"][report["main_metric"]],
        "retention_pct": rows["student"]["retention_pct"],
        "retention_meaningful": report.get("retention_meaningful", True),
        "teacher_parameters": rows["teacher"]["parameters"],
        "student_parameters": rows["student"]["parameters"],
        "output_dir": str(config.output_dir),
        "seed": config.seed,
        "teacher_training": training_summary(Paths(config.output_dir).teacher),
        "student_training": training_summary(Paths(config.output_dir).student),
    }


def training_summary(folder: Path) -> dict[str, Any] | None:
    """What training a model cost and how far from its plateau it stopped (its
    ``training.json``): steps, seconds, and the learning curve's last-window gain."""
    record_file = folder / "training.json"
    if not record_file.is_file():
        return None
    record = json.loads(record_file.read_text(encoding="utf-8"))
    curve = record.get("learning_curve") or {}
    return {
        "steps": record.get("steps"),
        "train_seconds": record.get("train_seconds"),
        "curve_metric": curve.get("metric"),
        "curve_points": curve.get("points"),
        "last_window_gain": curve.get("last_window_gain"),
        "plateau": curve.get("plateau"),
        "kept_step": curve.get("kept_step"),
    }


def measure_task(
    review: ReviewConfig, cells: list[dict[str, Any]], configs: dict[tuple[str, str], Any]
) -> None:
    """Latency (round-robin over all of the task's models) and memory at every length. A model
    whose trained weights are not on this machine (a cell published by another session) is
    timed as its architecture with fresh weights, and the cell says so."""
    import tempfile

    import torch

    config = configs[(cells[0]["task"], cells[0]["architecture"])]
    task = build_task(config.task, config.seed)
    model_class = task.model_class
    models, where = [], []
    with tempfile.TemporaryDirectory(prefix="kdformer-review-") as scratch:
        for cell in cells:
            cell["notes"] = {}
            paths = Paths(Path(cell["output_dir"]))
            for role in ROLES:
                path = getattr(paths, role)
                if not has_weights(path):
                    folder = Path(scratch) / cell["architecture"] / role
                    path = rebuild(cell, role, model_class, folder)
                    cell["notes"][role] = (
                        "timed as its published architecture with fresh weights (the trained "
                        "weights are not on this machine)"
                    )
                models.append(load_model(str(path), model_class).eval())
                where.append((cell, role, path))
                cell[f"{role}_latency_ms"], cell[f"{role}_peak_mib"] = {}, {}
        for length in review.lengths:
            with torch.inference_mode():
                timed = measure_latencies(
                    models, review.latency_batch_size, length, review.latency_repeats, 1,
                    torch.device("cpu"), task,
                )  # fmt: skip
            for (cell, role, path), model, timing in zip(where, models, timed, strict=True):
                cell[f"{role}_latency_ms"][str(length)] = timing["latency_ms"]
                family = find_family(model)
                note = family.length_note(model.config, length) if family else ""
                if note:
                    cell["notes"][f"{role} @ {length}"] = note
                if review.memory:
                    cell[f"{role}_peak_mib"][str(length)] = forward_peak_mib(
                        path, type(model).__name__, length, review.latency_batch_size, task
                    )
