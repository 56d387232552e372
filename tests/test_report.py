"""Report figures against hand computation: the majority-class baseline and the gain kept over it."""

from __future__ import annotations

import datasets
import pytest

from kdformer.config import ReportConfig, TaskConfig
from kdformer.report import (
    ModelMeasurement,
    build_report,
    gain_kept_pct,
    majority_baseline,
    to_markdown,
)
from kdformer.tasks import build_task


def labels(values: list[int]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": ["x"] * len(values), "label": values})


def test_majority_baseline_predicts_the_most_frequent_training_label():
    task = build_task(TaskConfig(name="mrpc"))
    # Training split: label 1 three times out of four. Eval: 1, 0, 0, 1, 1 -> predicting 1
    # everywhere is right 3/5 times; precision 3/5, recall 1 -> F1 = 2 * 0.6 / 1.6 = 0.75.
    floor = majority_baseline(task, labels([1, 1, 0, 1]), labels([1, 0, 0, 1, 1]))
    assert floor == pytest.approx({"accuracy": 0.6, "f1": 0.75})
    # The majority of the *training* labels, even when the eval split leans the other way.
    floor = majority_baseline(task, labels([0, 0, 1]), labels([1, 1, 1, 0]))
    assert floor["accuracy"] == pytest.approx(0.25) and floor["f1"] == 0.0


def test_majority_baseline_is_undefined_for_regression():
    task = build_task(TaskConfig(name="stsb"))
    data = datasets.Dataset.from_dict({"text": ["x", "y"], "label": [0.5, 2.0]})
    assert majority_baseline(task, data, data) is None


def test_gain_kept_against_hand_computation():
    # Teacher 75%, baseline 68%, student 70%: 2 of the teacher's 7 points of gain.
    assert gain_kept_pct(0.70, 0.75, 0.68) == pytest.approx(100 * 2 / 7)
    assert gain_kept_pct(0.68, 0.75, 0.68) == 0.0
    assert gain_kept_pct(0.60, 0.75, 0.68) < 0
    assert gain_kept_pct(0.70, 0.68, 0.68) is None, "a teacher at the baseline has no gain"
    assert gain_kept_pct(0.70, 0.75, None) is None


def measurement(name: str, accuracy: float, latency: float) -> ModelMeasurement:
    return ModelMeasurement(name, None, {"accuracy": accuracy}, 100, None, latency, latency, 1.0)


def test_report_gives_baseline_row_and_gain_kept():
    models = [measurement("teacher", 0.80, 10.0), measurement("student", 0.70, 5.0)]
    report = build_report("sst2", "accuracy", 4, models, ReportConfig(), baseline={"accuracy": 0.5})
    teacher, student = report["models"]
    assert student["retention_pct"] == pytest.approx(87.5)
    assert student["gain_kept_pct"] == pytest.approx(100 * 0.2 / 0.3)
    assert teacher["gain_kept_pct"] == pytest.approx(100.0)
    assert report["baseline"] == {"name": "majority class", "metrics": {"accuracy": 0.5}}
    text = to_markdown(report)
    assert "| majority class | - | 50.00 |" in text and "66.7%" in text and "% of gain" in text
    plain = build_report("sst2", "accuracy", 4, models, ReportConfig())
    assert plain["baseline"] is None and "% of gain" not in to_markdown(plain)
