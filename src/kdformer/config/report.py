"""How models are measured for the cost/quality report. Whether the device exists is checked
when a command starts (:func:`kdformer.devices.resolve_device`), before any long work."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from kdformer.config.base import Section

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class ReportConfig(Section):
    """How models are measured for the cost/quality report."""

    latency_batch_size: int = Field(32, gt=0, description="Batch size for latency timing.")
    latency_seq_length: int = Field(128, gt=0, description="Sequence length for latency timing.")
    latency_repeats: int = Field(20, gt=0, description="Timed forward passes (median reported).")
    latency_warmup: int = Field(3, ge=0, description="Untimed warm-up passes.")
    device: str = Field("auto", description="Where to evaluate and time: auto, cpu, cuda, cuda:1.")
    memory: bool = Field(
        True,
        description="Measure each saved model's peak resident memory of serving (weights + one "
        "forward of the latency batch) in a fresh process on the CPU (Linux; a few seconds per "
        "model).",
    )

    @field_validator("device")
    @classmethod
    def _available_device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(
                f"device '{value}' is not one of auto, cpu, cuda, cuda:N, mps (e.g. cuda:0)"
            )
        return value

    min_teacher_gain: float = Field(
        0.1,
        ge=0,
        le=1,
        description="The share of the headroom between the task's trivial baseline and a "
        "perfect score that the teacher must close for retention to mean anything (0.1: a "
        "teacher at 50.9% accuracy over a 50.9% majority class must reach 55.8%). Below it, "
        "distillation stops before training (unless distill.allow_weak_teacher) and reports "
        "mark retention as meaningless.",
    )
