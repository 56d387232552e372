"""The performance-review file (Brown et al.): architectures x tasks, each a convert-then-distill
run, measured at several lengths."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from kdformer.config.base import ConfigError, Section
from kdformer.config.convert import ConvertConfig
from kdformer.config.loading import load_section_file


class ReviewArchitecture(Section):
    """One architecture of the review: how the teacher is converted."""

    name: str = Field(..., min_length=1, description="Row name (full, longformer, ...).")
    convert: ConvertConfig = Field(
        ...,
        description="The conversion (to: full for the full-attention reference); max_length "
        "defaults to the review's longest length.",
    )


class ReviewTask(Section):
    """One task of the review: overrides of the base experiment (its task section, training)."""

    name: str = Field(..., min_length=1, description="Task name in the tables.")
    overrides: list[str] = Field(default_factory=list, description="key.sub=value overrides.")


class ReviewConfig(Section):
    """A performance review: architectures x tasks, each a convert-then-distill run."""

    output_dir: Path = Field(..., description="Where the tables and plots go.")
    runs_dir: Path | None = Field(
        None,
        description="Where each cell's run (models, checkpoints) goes. Unset: output_dir/runs.",
    )
    base: Path = Field(..., description="Run config (YAML), relative to the review file.")
    overrides: list[str] = Field(default_factory=list, description="Applied to the base first.")
    architectures: list[ReviewArchitecture] = Field(..., min_length=1)
    tasks: list[ReviewTask] = Field(..., min_length=1)
    reference: str = Field("full", description="Architecture whose teacher speed-ups refer to.")
    lengths: list[int] = Field(
        default_factory=lambda: [512, 1024, 2048, 4096],
        description="Input lengths (tokens) at which every model is timed and measured.",
    )
    latency_batch_size: int = Field(1, gt=0, description="Batch size for timing.")
    latency_repeats: int = Field(5, gt=0, description="Timed rounds (median reported).")
    memory: bool = Field(True, description="Measure peak inference memory (fresh processes).")

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, value: list[int]) -> list[int]:
        if not value or any(v <= 0 for v in value):
            raise ValueError("lengths must list positive token counts")
        return sorted(set(value))

    def check(self) -> None:
        names = [a.name for a in self.architectures]
        if len(set(names)) != len(names):
            raise ConfigError(f"architecture names repeat: {names}")
        if self.reference not in names:
            raise ConfigError(f"reference '{self.reference}' is not an architecture ({names})")
        tasks = [t.name for t in self.tasks]
        repeated = sorted({n for n in tasks if tasks.count(n) > 1})
        if repeated:  # one name is one runs folder and one table: the last task would win
            raise ConfigError(
                f"task name(s) {repeated} repeat in tasks ({tasks}): each task's runs go to "
                "runs/<task name>/<architecture> and fill one table, so all but the last such "
                "task would be lost. Give each task its own name"
            )
        longest = max(self.lengths)
        for i, arch in enumerate(self.architectures):
            given = "max_length" in arch.convert.model_fields_set  # unset: the longest length
            if given and arch.convert.max_length < longest:
                raise ConfigError(
                    f"architectures.{i} ({arch.name}): convert.max_length {arch.convert.max_length} "
                    f"is below the review's longest length {longest}, so its models could not be "
                    f"timed there (they take at most {arch.convert.max_length} tokens). Raise "
                    f"convert.max_length to at least {longest} (or leave it unset: the longest "
                    f"length), or drop the longer lengths"
                )
            self._check_landmark_lengths(i, arch, longest)

    def _check_landmark_lengths(self, i: int, arch: ReviewArchitecture, longest: int) -> None:
        """Nyströmformer models are timed with their landmarks following each length, which
        must be a multiple of num_landmarks: found before training, not when timing."""
        convert = arch.convert
        if convert.to != "nystromformer":
            return
        max_length = convert.max_length if "max_length" in convert.model_fields_set else longest
        landmarks = convert.num_landmarks
        if landmarks == (convert.segment_length or max_length):
            return  # one landmark per token: full attention, which takes any length
        bad = [n for n in self.lengths if n % landmarks]
        if bad:
            raise ConfigError(
                f"architectures.{i} ({arch.name}): a Nyströmformer with num_landmarks "
                f"{landmarks} is timed at lengths that are multiples of {landmarks}, and "
                f"lengths {bad} are not (the review would train every model, then stop when "
                f"timing). Use lengths that are multiples of {landmarks}, or a num_landmarks "
                "that divides them all"
            )


def load_review(path: str | Path) -> tuple[ReviewConfig, Path]:
    """Read and validate a review file; returns it with its folder (for the relative base)."""
    review = load_section_file(path, ReviewConfig, "output_dir, base, architectures, tasks")
    review.check()
    return review, Path(path).parent
