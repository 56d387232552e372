"""What the quality and the step-cost parts of the distillation benchmark share: the
student and loss both measure, and a step timer for the Trainer."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

from transformers import TrainerCallback

TEACHER = "minilm-l6"
STUDENT_LAYERS = 3
TEMPERATURE = 2.0
KD_HARD_LABEL_WEIGHT = 0.5
#: Knowledge terms of the KD student, as in configs/demo.yaml.
KD_KNOWLEDGE = [
    {"type": "logits", "weight": 1.0, "temperature": TEMPERATURE},
    {"type": "hidden", "weight": 1.0, "loss": "mse"},
]


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step as the Trainer runs it, optionally interleaved with
    another training loop's steps.

    on_step_begin -> on_step_end spans forward, backward, clipping, optimizer and scheduler step,
    and zero_grad; ``between`` is the Trainer's time outside that span (fetching and collating
    the next batch, logging, saving). With ``other`` (a function running one step of another loop
    and returning its seconds), one such step runs next to each Trainer step, before it on even
    steps and after it on odd ones (A B B A ...), outside the timed span: both loops then see the
    same machine state, which matters on a shared CPU whose load drifts within seconds.
    """

    def __init__(self, other: Callable[[], float] | None = None) -> None:
        self.durations: list[float] = []
        self.between: list[float] = []
        self.other_durations: list[float] = []
        self.logs: list[dict[str, float]] = []
        self.other = other
        self._begin = 0.0
        self._returned: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._returned is not None:
            self.between.append(time.perf_counter() - self._returned)
        if self.other is not None and state.global_step % 2 == 0:
            self.other_durations.append(self.other())
        self._begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._begin)
        if self.other is not None and state.global_step % 2 == 0:  # step index global_step - 1
            self.other_durations.append(self.other())
        self._returned = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.logs.append({"step": state.global_step, **logs})


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def warn_if_busy(load: list[float] | None) -> None:
    """Torch uses every core, so a second busy process slows each step several-fold: say so."""
    if load and load[0] > 0.5:
        print(
            f"WARNING: load average {load} before starting: other processes are using the CPU, "
            "so training times and latencies will be inflated and noisy.",
            file=sys.stderr,
            flush=True,
        )
