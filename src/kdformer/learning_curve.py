"""Learning curves: the task's main metric against training steps, and whether a run reached its
plateau. A result counts only when its teacher has learnt the task, so every scored run records
how far from converged it stopped, and can stop itself once it has converged.

The plateau rule: the best score of the whole run exceeds the best score reached by the end of
its first four fifths (``1 - window``) by less than ``min_gain`` points. A curve too short to
have a point at or before that step has no verdict yet. Scores are in points: the task's
metrics are fractions (accuracy 0.875), so the callback records 100 x the metric (87.5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback


def last_window_gain(
    points: Sequence[tuple[int, float]], window: float = 0.2, higher_is_better: bool = True
) -> float | None:
    """Points the last ``window`` of the steps added to the best score (negative gains count
    as zero: a run does not lose its best checkpoint); None when no point lies at or before
    the window's start (the curve is too short to judge)."""
    if not points:
        return None
    sign = 1.0 if higher_is_better else -1.0
    last_step = max(step for step, _ in points)
    start = (1.0 - window) * last_step
    before = [sign * value for step, value in points if step <= start]
    if not before:
        return None
    best = max(sign * value for _, value in points)
    return max(0.0, best - max(before))


def curve_record(
    metric: str,
    points: Sequence[tuple[int, float]],
    window: float = 0.2,
    min_gain: float = 0.5,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """The learning curve as results store it: every point, the best, the last window's gain
    and the verdict (``plateau``: True, False, or None when too short to judge)."""
    gain = last_window_gain(points, window, higher_is_better)
    values = [value for _, value in points]
    best = (max if higher_is_better else min)(values) if values else None
    return {
        "metric": metric,
        "points": [[int(step), round(float(value), 4)] for step, value in points],
        "best": best,
        "window": window,
        "min_gain": min_gain,
        "last_window_gain": None if gain is None else round(gain, 4),
        "plateau": None if gain is None else gain < min_gain,
    }


def describe_curve(record: dict[str, Any]) -> str:
    """One line for logs and reports: where the curve ended and how far from its plateau."""
    points = record.get("points") or []
    if not points:
        return "no learning curve (no evaluation during training)"
    step, value = points[-1]
    share = round(100 * record["window"])
    if record["plateau"] is None:
        verdict = f"too few points to judge the plateau (need one before the last {share}%)"
    elif record["plateau"]:
        verdict = (
            f"plateau: the last {share}% of the steps added {record['last_window_gain']:.2f} "
            f"points (< {record['min_gain']:g})"
        )
    else:
        verdict = (
            f"not converged: the last {share}% of the steps added "
            f"{record['last_window_gain']:.2f} points (>= {record['min_gain']:g})"
        )
    return f"{record['metric']} {value:.2f} at step {step} (best {record['best']:.2f}); {verdict}"


class LearningCurve(TrainerCallback):
    """Records ``eval_<metric>`` (times ``scale``: points) at every evaluation; with
    ``stop_at_plateau``, ends training once the plateau rule holds, after at least
    ``min_points`` evaluations and ``after`` of the run's steps. A resumed run
    rebuilds its curve from the checkpoint's log history, so the curve spans every part."""

    def __init__(
        self,
        metric: str,
        window: float = 0.2,
        min_gain: float = 0.5,
        stop_at_plateau: bool = False,
        higher_is_better: bool = True,
        min_points: int = 3,
        scale: float = 100.0,
        after: float = 0.25,
    ):
        self.metric = metric
        self.scale = scale
        self.after = after
        self.window = window
        self.min_gain = min_gain
        self.stop_at_plateau = stop_at_plateau
        self.higher_is_better = higher_is_better
        self.min_points = min_points
        self.points: list[tuple[int, float]] = []
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        key = f"eval_{self.metric}"
        logged = {int(e["step"]): self.scale * float(e[key]) for e in state.log_history if key in e}
        self.points = sorted(logged.items())

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None:
            return
        self.points = [p for p in self.points if p[0] != state.global_step]
        self.points.append((state.global_step, self.scale * float(value)))
        if not self.stop_at_plateau or len(self.points) < self.min_points:
            return
        if state.max_steps and state.global_step < self.after * state.max_steps:
            return  # early training can sit at the trivial baseline before it learns
        gain = last_window_gain(self.points, self.window, self.higher_is_better)
        if gain is not None and gain < self.min_gain:
            self.stopped_at = state.global_step
            control.should_training_stop = True
            control.should_save = True  # the stopping step is the checkpoint a resume finds

    def record(self) -> dict[str, Any]:
        out = curve_record(
            self.metric, self.points, self.window, self.min_gain, self.higher_is_better
        )
        out["stopped_at_plateau"] = self.stopped_at
        return out
