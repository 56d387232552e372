"""What a run leaves on disk: the output folder's layout, finished-model checks, atomic saves,
and the start mode of a stage (skip, resume or fresh)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from kdformer import distributed
from kdformer.config import ConfigError, ExperimentConfig, dump_config
from kdformer.devices import folder_problem
from kdformer.learning_curve import describe_curve
from kdformer.models import non_finite_parameters, safetensors_problem, share_files
from kdformer.tasks import Task
from kdformer.training import (
    TaskTrainer,
    TrainingDiverged,
    latest_checkpoint,
)

console = Console(stderr=True)


@dataclass
class Paths:
    root: Path

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    @property
    def converted(self) -> Path:
        """The teacher converted to efficient attention (convert-then-distill runs)."""
        return self.root / "converted"

    @property
    def student(self) -> Path:
        return self.root / "student"

    @property
    def general(self) -> Path:
        """The task-agnostic stage's own output folder (two-stage runs)."""
        return self.root / "general"

    @property
    def one_stage(self) -> Path:
        """The one-stage comparison's own output folder (two-stage runs)."""
        return self.root / "one_stage"

    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage


def check_output_dir(path: Path) -> None:
    """ConfigError, before any work, when ``output_dir`` is a file or cannot be written (it
    need not exist yet: its nearest existing parent must be a folder this user can write)."""
    problem = folder_problem(Path(path))
    if problem is not None:
        raise ConfigError(f"output_dir {problem}: choose an output_dir you can write to")


def is_finished(model_dir: Path) -> bool:
    """A saved model: its config and safetensors weights whose header reads."""
    if not (model_dir / "config.json").is_file():
        return False
    weights = list(model_dir.glob("*.safetensors"))
    return bool(weights) and all(safetensors_problem(path) is None for path in weights)


def start_mode(final: Path, checkpoints: Path, overwrite: bool, resume: bool) -> str:
    """'skip' a finished stage, 'resume' from a checkpoint, or start 'fresh'.

    A checkpoint newer than the finished model is an interrupted ``--overwrite``: ``--resume``
    finishes it (the finished model stays in place until the new one is saved). Both flags
    at once are refused: on a finished stage they once resumed its own last checkpoint, so the
    "redone" model was the old one, whatever the config now said."""
    if overwrite and resume:
        raise ConfigError(
            "--overwrite and --resume ask for opposite things: --overwrite starts finished "
            "stages over (their checkpoints are removed), --resume continues an interrupted run "
            "from its last checkpoint. Give one (after an interrupted --overwrite, --resume "
            "alone finishes it)"
        )
    restore_interrupted_swap(final)
    last = latest_checkpoint(checkpoints)
    finished = is_finished(final)
    newer = (
        finished
        and last is not None
        and last.stat().st_mtime > (final / "config.json").stat().st_mtime
    )
    if finished and not overwrite and not (resume and newer):
        if newer:
            console.print(
                f"[yellow]{checkpoints} holds {last.name}, newer than the finished model in "
                f"{final} (an interrupted --overwrite): --resume finishes it[/]"
            )
        return "skip"
    if resume:
        if last is None:
            console.print(f"[yellow]no checkpoint in {checkpoints}; starting from scratch[/]")
            return "fresh"
        return "resume"
    if last is not None:
        if not overwrite:
            raise ConfigError(
                f"{checkpoints} holds {last.name} from an unfinished run: pass --resume to continue "
                "from it, or --overwrite to start over"
            )
        distributed.wait()  # every process has seen the checkpoint before it goes
        if distributed.is_main():
            shutil.rmtree(checkpoints)
        distributed.wait()
    return "fresh"


def save_atomically(save: Callable[[Path], None], final: Path) -> None:
    """Write into a scratch folder, then swap it in, so a finished model is never half-replaced.
    Under several processes the main one writes while the others wait for it."""
    if distributed.is_main():
        _swap_in(save, final)
    distributed.wait()


def restore_interrupted_swap(final: Path) -> None:
    """Put back the finished model a save moved aside (``.previous``) when the process died
    before the new one was renamed in: the old model is finished again, never lost."""
    previous = final.with_name(final.name + ".previous")
    if distributed.is_main() and not final.exists() and is_finished(previous):
        previous.rename(final)
        console.print(f"[yellow]{final}: put back the finished model an interrupted save had "
                      "moved aside[/]")  # fmt: skip
    distributed.wait()


def _swap_in(save: Callable[[Path], None], final: Path) -> None:
    partial = final.with_name(final.name + ".partial")
    previous = final.with_name(final.name + ".previous")
    shutil.rmtree(partial, ignore_errors=True)
    save(partial)
    share_files(partial)  # safetensors leaves weights at 0600
    if final.exists():
        shutil.rmtree(previous, ignore_errors=True)
        final.rename(previous)
    partial.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def write_config(config: ExperimentConfig) -> None:
    if not distributed.is_main():
        return
    config.output_dir.mkdir(parents=True, exist_ok=True)
    (config.output_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")


def save_model(
    model: Any,
    tokenizer: Any,
    config: ExperimentConfig,
    folder: Path,
    state_dict: dict[str, Any] | None = None,
    task: Task | None = None,
) -> None:
    """Weights (safetensors), tokenizer and the config that made them, loadable with plain
    ``from_pretrained``, plus the files the ``task`` adds (a sentence-transformers layout).
    Refuses non-finite weights. ``state_dict``: the full weights when training sharded them
    (see :func:`kdformer.training.gathered_state_dict`)."""
    if state_dict is not None:
        bad = [k for k, v in state_dict.items() if v.is_floating_point() and not v.isfinite().all()]
    else:
        bad = non_finite_parameters(model)
    if bad:
        raise TrainingDiverged(
            f"the trained model has non-finite weights (e.g. {bad}); it was not saved. Lower the "
            "learning rate and train again"
        )
    model.save_pretrained(folder, state_dict=state_dict)
    tokenizer.save_pretrained(folder)
    (folder / "kdformer_config.yaml").write_text(dump_config(config), encoding="utf-8")
    if task is not None:
        task.write_model_files(folder, model.config)


def write_training_record(trainer: TaskTrainer, folder: Path, teacher_signal: Any = None) -> None:
    """What the training cost: optimiser steps, (padded) input tokens processed and seconds
    spent training (summed over resumed runs); with a teacher cache, what filling it cost
    (not part of ``train_seconds``)."""
    state = trainer.state
    record: dict[str, Any] = {
        "steps": state.global_step,
        "tokens": int(state.num_input_tokens_seen or 0),
        "epochs": state.epoch,
        "train_seconds": round(trainer.train_seconds, 3),  # tiny runs take under 0.05 s
    }
    curve = trainer.learning_curve
    if curve is not None:
        if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
            # keep_best: the saved model is the best evaluation's, not the last step's.
            curve["kept_step"] = int(Path(state.best_model_checkpoint).name.split("-")[-1])
        record["learning_curve"] = curve
        console.print(f"learning curve: {describe_curve(curve)}")
    signals = getattr(teacher_signal, "signals", {"main": teacher_signal})
    caches = {i: s.record() for i, s in signals.items() if hasattr(s, "record")}
    if caches:
        record["teacher_cache"] = caches
    (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
