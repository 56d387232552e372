"""Optimisation settings, mapped onto ``transformers.TrainingArguments`` by the training layer."""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kdformer.config.base import Section

SCHEDULERS: tuple[str, ...] = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
    "warmup_stable_decay", "greedy",
)  # fmt: skip
"""``transformers.trainer_utils.SchedulerType``'s names, listed here so validation needs no
transformers import (a test keeps the two equal)."""


class TrainConfig(Section):
    """Optimisation settings, mapped onto `transformers.TrainingArguments`."""

    epochs: float = Field(
        3.0, gt=0, description="Passes over the training set (if max_steps unset)."
    )
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimiser steps.")
    batch_size: int = Field(32, gt=0, description="Examples per device per step.")
    eval_batch_size: int = Field(128, gt=0, description="Examples per device per evaluation step.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Steps to accumulate per update.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of steps for LR warm-up.")
    lr_scheduler: str = Field("linear", description="transformers scheduler name.")

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        valid = list(SCHEDULERS)
        if value not in valid:
            close = difflib.get_close_matches(value, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown scheduler '{value}'{hint}; valid: {', '.join(valid)}")
        return value

    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    memory_check: bool = Field(
        True,
        description="Print a memory estimate before training (weights, gradients, AdamW, "
        "activations, teachers) and stop when it is over what the device has free.",
    )
    group_by_length: bool = Field(
        False,
        description="Draw each batch from examples of similar length (transformers' "
        "LengthGroupedSampler; still random): batches pad to their own longest input, so on "
        "inputs of mixed lengths (SQuAD paragraphs: 177 tokens on average, 820 at most) about "
        "half the padded tokens go.",
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no", description="Mixed precision (fp16/bf16 need a GPU; bf16 also works on CPU)."
    )
    logging_steps: int = Field(10, gt=0, description="Log losses every this many steps.")
    eval_steps: int | None = Field(
        None, gt=0, description="Evaluate on the eval set every this many steps (unset: at end)."
    )
    stop_at_plateau: bool = Field(
        False,
        description="End training once the task's main metric has plateaued: the last "
        "plateau_window of the steps added less than plateau_gain points to the best score "
        "(checked at each evaluation; needs eval_steps). Every scored run records its learning "
        "curve and this verdict in training.json either way.",
    )
    plateau_window: float = Field(
        0.2, gt=0, lt=1, description="The share of the steps the plateau rule looks back over."
    )
    plateau_gain: float = Field(
        0.5,
        ge=0,
        description="Points the last window must add for a run not to count as converged.",
    )
    plateau_after: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="The share of the steps before which stop_at_plateau never stops a run "
        "(early training can sit at the trivial baseline for a while).",
    )

    keep_best: bool = Field(
        False,
        description="Finish with the weights of the best-scoring evaluation, not the last step "
        "(a run stopped at its plateau has usually passed its best; needs eval_steps, and "
        "save_steps a multiple of eval_steps so that every scored step is saved).",
    )

    @model_validator(mode="after")
    def _plateau_needs_evaluations(self) -> TrainConfig:
        for name in ("stop_at_plateau", "keep_best"):
            if getattr(self, name) and self.eval_steps is None:
                raise ValueError(
                    f"{name} judges the learning curve at each evaluation: set eval_steps "
                    "(e.g. a tenth of max_steps)"
                )
        if self.keep_best and self.save_steps % self.eval_steps:
            raise ValueError(
                f"keep_best keeps a saved evaluation, but save_steps {self.save_steps} is not a "
                f"multiple of eval_steps {self.eval_steps}: set save_steps to {self.eval_steps} "
                "(or another multiple)"
            )
        return self

    save_steps: int = Field(500, gt=0, description="Write a resumable checkpoint every N steps.")
    save_total_limit: int = Field(2, gt=0, description="Checkpoints to keep.")
    dataloader_num_workers: int = Field(0, ge=0, description="Data-loading worker processes.")
    report_to: list[str] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Loggers (tensorboard, wandb, ...; [] for none).",
    )
    use_cpu: bool = Field(False, description="Train on the CPU even if an accelerator is present.")
