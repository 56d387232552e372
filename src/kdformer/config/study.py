"""The study file: a base experiment, overrides per task and variant, a grid, seeds, plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from kdformer.config.base import Section
from kdformer.config.loading import load_section_file

Overrides = list[str] | dict[str, Any]
_RESERVED = {
    "seed": "use `seeds:` (and `teacher_seed:` for the shared teachers)",
    "output_dir": "each run gets <output_dir>/runs/<run-id>",
}


def refuse_reserved(overrides: Overrides, where: str) -> Overrides:
    """ValueError for an override of ``seed`` or ``output_dir``: the study sets both for every
    run afterwards, so the override would be dropped without a word (``seed`` would only
    change which teacher is fine-tuned)."""
    keys = overrides if isinstance(overrides, dict) else [o.split("=", 1)[0] for o in overrides]
    for key in (str(k).strip() for k in keys):
        if key in _RESERVED:
            raise ValueError(
                f"{where} overrides '{key}', which the study sets for every run: {_RESERVED[key]}"
            )
    return overrides


class VariantConfig(Section):
    """A hand-picked combination of settings, compared with the other variants."""

    name: str = Field(..., min_length=1, description="Short name; part of the run ids.")
    overrides: Overrides = Field(
        default_factory=list,
        description="key.sub=value strings, or a mapping {key.sub: value}, applied to the base.",
    )

    @field_validator("overrides")
    @classmethod
    def _not_reserved(cls, overrides: Overrides, info: ValidationInfo) -> Overrides:
        return refuse_reserved(overrides, f"variant '{info.data.get('name', '?')}'")


class PlotConfig(Section):
    """What the plots show."""

    x: str | None = Field(
        None,
        description="Dimension along the x axis of the bar chart: 'variant' or a grid field; the "
        "other dimensions become bar series. Unset: one bar per variant/grid point.",
    )
    y: Literal["retention", "metric"] = Field(
        "retention",
        description="Bar height: retention (% of the teacher's main metric) or the main metric.",
    )
    scatter: bool = Field(
        False, description="Also plot retention vs speed-up, one point per variant/grid point."
    )


class StudyConfig(Section):
    """A study: variants x grid x seeds (x tasks) runs of one base experiment."""

    name: str = Field(..., min_length=1, description="Study name, shown in tables and plots.")
    description: str = Field("", description="What the study asks; printed in summary.md.")
    output_dir: Path = Field(..., description="Where runs, teachers, tables and plots go.")
    base: Path | dict[str, Any] = Field(
        ...,
        description="Experiment config: a YAML path relative to the study file, or an inline "
        "mapping.",
    )
    overrides: Overrides = Field(
        default_factory=list, description="Applied to the base before anything else."
    )
    tasks: dict[str, Overrides] | None = Field(
        None,
        description="Task label -> overrides (e.g. task.name, task.max_length, step counts). "
        "Unset: the base's task only.",
    )
    variants: list[VariantConfig] | None = Field(
        None, description="Hand-picked combinations: [{name, overrides}]."
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted config field -> values; every combination is run (cartesian product).",
    )
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1, description="Run seeds.")
    teacher_seed: int | None = Field(
        None, description="Seed for fine-tuning the shared teachers (unset: the base's seed)."
    )
    teachers_dir: Path | None = Field(
        None,
        description="Where fine-tuned teachers live (unset: <output_dir>/teachers). Point several "
        "studies at one folder to fine-tune each teacher once for all of them.",
    )
    results_dir: Path | None = Field(
        None,
        description="A folder kept in version control (e.g. docs/studies/<name>) that receives "
        "each finished run's result (runs/<run-id>.json), teachers.json, runs.csv, summary.md "
        "and the plots. A run whose result is there counts as finished, so a study that spans "
        "several sessions or machines keeps its progress without the models in output_dir.",
    )
    keep_checkpoints: bool = Field(
        False,
        description="Keep each finished run's Trainer checkpoints (logs are always kept).",
    )
    plot: PlotConfig = Field(default_factory=PlotConfig, description="Plot settings.")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("overrides")
    @classmethod
    def _overrides_not_reserved(cls, overrides: Overrides) -> Overrides:
        return refuse_reserved(overrides, "the study")

    @field_validator("tasks")
    @classmethod
    def _tasks_not_reserved(cls, tasks: dict[str, Overrides] | None) -> Any:
        for label, overrides in (tasks or {}).items():
            refuse_reserved(overrides, f"tasks.{label}")
        return tasks

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if key in _RESERVED:
                raise ValueError(f"grid over '{key}' is not allowed: {_RESERVED[key]}")
            if not values:
                raise ValueError(f"grid field '{key}' has no values")
            if len({value_text(v) for v in values}) != len(values):
                raise ValueError(f"grid field '{key}' lists a value twice: {values}")
        return grid

    @field_validator("variants")
    @classmethod
    def _unique_variants(cls, variants: list[VariantConfig] | None) -> list[VariantConfig] | None:
        if variants is not None:
            if not variants:
                raise ValueError("variants is empty: list at least one, or leave it out")
            names = [v.name for v in variants]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"variant names must be distinct; repeated: {twice}")
        return variants

    @model_validator(mode="after")
    def _plot_axis(self) -> StudyConfig:
        x = self.plot.x
        if x is not None and x != "variant" and x not in self.grid:
            valid = ["variant", *self.grid] if self.variants else list(self.grid)
            raise ValueError(f"plot.x '{x}' is neither 'variant' nor a grid field; valid: {valid}")
        if x == "variant" and not self.variants:
            raise ValueError("plot.x is 'variant' but the study has no variants")
        return self


def override_list(overrides: Overrides) -> list[str]:
    """``key.sub=value`` strings from a list of them or a ``{key.sub: value}`` mapping."""
    if isinstance(overrides, dict):
        return [f"{key}={value_text(value)}" for key, value in overrides.items()]
    return list(overrides)


def value_text(value: Any) -> str:
    """A value as YAML flow text that :func:`kdformer.config.parse_override` reads back as-is."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def load_study(path: str | Path) -> tuple[StudyConfig, Path]:
    """Read and validate a study file; returns it with its folder (for a relative ``base``)."""
    study = load_section_file(path, StudyConfig, "name, output_dir, base, grid, seeds, ...")
    return study, Path(path).parent


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Grid keys shortened to their last part where that stays unambiguous."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}
