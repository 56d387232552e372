"""The convert stage of convert-then-distill: the configured teacher converted to efficient
attention (``convert:``) before it is fine-tuned, and which model the later stages start from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdformer.config import ExperimentConfig, ModelConfig
from kdformer.conversion import convert_checkpoint, dropped_positions, target_config
from kdformer.models import load_model_config, resolve_name
from kdformer.pipeline.outputs import Paths, console, is_finished, save_atomically


def source_teacher_config(config: ExperimentConfig) -> Any:
    """The config of the model fine-tuning starts from: the teacher, or (``convert:``) what
    converting it will give, known before any weights are converted."""
    teacher_config = load_model_config(config.teacher)
    if config.convert is None:
        return teacher_config

    convert = config.convert
    return target_config(teacher_config, convert.to, convert.max_length, **convert.options())


def teacher_source(config: ExperimentConfig) -> ModelConfig:
    """What fine-tuning loads: the teacher, or its converted copy in ``<output_dir>/converted``."""
    if config.convert is None:
        return config.teacher
    return ModelConfig(name=str(Paths(config.output_dir).converted))


def convert_teacher(config: ExperimentConfig, overwrite: bool = False) -> Path:
    """Convert the full-attention teacher into ``<output_dir>/converted`` (skipped when done)."""

    assert config.convert is not None
    paths = Paths(config.output_dir)
    if is_finished(paths.converted) and not overwrite:
        console.print(f"teacher already converted in {paths.converted}; skipping")
        return paths.converted
    convert = config.convert
    console.print(
        f"[bold]converting teacher[/] {config.teacher.name} -> {convert.to} "
        f"({convert.max_length} positions)"
    )
    source_positions = dropped_positions(load_model_config(config.teacher), convert.max_length)
    if source_positions is not None:
        console.print(
            f"[yellow]warning: convert.max_length {convert.max_length} is below the "
            f"{source_positions} positions of {config.teacher.name}: the converted teacher keeps "
            f"only the first {convert.max_length}[/]"
        )

    def save(folder: Path) -> None:
        convert_checkpoint(
            resolve_name(config.teacher.name), convert.to, folder, convert.max_length,
            **convert.options(),
        )  # fmt: skip

    save_atomically(save, paths.converted)
    return paths.converted
