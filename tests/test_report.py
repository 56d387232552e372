"""Report figures against hand computation: the trivial baselines, the gain kept over them, and
retention marked meaningless for a teacher that learnt nothing."""

from __future__ import annotations

import datasets
import pytest

from kdformer.config import ReportConfig
from kdformer.config.tasks import ClassificationTaskConfig
from kdformer.report import ModelMeasurement, build_report, gain_kept_pct, to_markdown
from kdformer.report.render import teacher_gain_is_clear
from kdformer.tasks import build_task


def labels(values: list[int]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": ["x"] * len(values), "label": values})


def test_majority_baseline_predicts_the_most_frequent_training_label():
    task = build_task(ClassificationTaskConfig(name="mrpc"))
    # Training split: label 1 three times out of four. Eval: 1, 0, 0, 1, 1 -> predicting 1
    # everywhere is right 3/5 times; precision 3/5, recall 1 -> F1 = 2 * 0.6 / 1.6 = 0.75.
    floor = task.baseline(labels([1, 1, 0, 1]), labels([1, 0, 0, 1, 1]))
    assert floor == pytest.approx({"accuracy": 0.6, "f1": 0.75})
    # The majority of the *training* labels, even when the eval split leans the other way.
    floor = task.baseline(labels([0, 0, 1]), labels([1, 1, 1, 0]))
    assert floor["accuracy"] == pytest.approx(0.25) and floor["f1"] == 0.0
    # Augmented examples (label -100, no gold label) do not count.
    floor = task.baseline(labels([0, -100, -100, -100, 1, 1]), labels([1, 0]))
    assert floor["accuracy"] == pytest.approx(0.5) and floor["f1"] == pytest.approx(2 / 3)


def test_mcc_of_a_constant_predictor_is_zero():
    """GLUE's scorer and scikit-learn give 0 for a degenerate confusion matrix; torchmetrics
    1.9 alone reports 2.56 here."""
    task = build_task(ClassificationTaskConfig(name="cola"))
    floor = task.baseline(labels([1, 1, 0]), labels([1, 0, 1, 1]))
    assert floor["mcc"] == 0.0 and floor["accuracy"] == pytest.approx(0.75)
    from sklearn.metrics import matthews_corrcoef

    constant = task.compute_metrics([[0.0, 1.0]] * 4, [1, 0, 1, 1])
    assert constant["mcc"] == matthews_corrcoef([1, 0, 1, 1], [1, 1, 1, 1]) == 0.0
    varied = task.compute_metrics([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [1, 0, 1, 1])
    assert varied["mcc"] == pytest.approx(matthews_corrcoef([1, 0, 1, 1], [1, 0, 0, 1]))


def test_regression_baseline_is_a_constant_with_no_correlation():
    task = build_task(ClassificationTaskConfig(name="stsb"))
    data = datasets.Dataset.from_dict({"text": ["x", "y", "z"], "label": [0.5, 2.0, 1.0]})
    assert task.baseline(data, data) == {"pearson": 0.0, "spearman": 0.0}


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
    report = build_report(
        "sst2", "accuracy", 4, models, ReportConfig(), baseline={"accuracy": 0.5},
        baseline_name="majority class",
    )  # fmt: skip
    teacher, student = report["models"]
    assert student["retention_pct"] == pytest.approx(87.5)
    assert student["gain_kept_pct"] == pytest.approx(100 * 0.2 / 0.3)
    assert teacher["gain_kept_pct"] == pytest.approx(100.0)
    assert report["baseline"] == {"name": "majority class", "metrics": {"accuracy": 0.5}}
    assert report["retention_meaningful"] and report["warning"] is None
    text = to_markdown(report)
    assert "| majority class | - | 50.00 |" in text and "66.7%" in text and "% of gain" in text
    assert "(!)" not in text
    plain = build_report("sst2", "accuracy", 4, models, ReportConfig())
    assert plain["baseline"] is None and "% of gain" not in to_markdown(plain)


def test_teacher_gain_rule_by_hand():
    # 10% of the headroom: over a 50.9% baseline the teacher needs 50.9 + 0.1 * 49.1 = 55.81%.
    assert teacher_gain_is_clear(0.5582, 0.509, 0.1)
    assert not teacher_gain_is_clear(0.5580, 0.509, 0.1)
    assert not teacher_gain_is_clear(0.509, 0.509, 0.0), "at the baseline is never clear"
    assert teacher_gain_is_clear(0.02, 0.0, 0.01)  # NER: all-O scores F1 0


def test_a_teacher_at_the_baseline_makes_retention_meaningless():
    """The demo recipe on a task MiniLM-L6 could not learn: teacher exactly at the majority
    class, student 'retaining' 326%. The report says retention means nothing."""
    models = [measurement("teacher", 0.155, 10.0), measurement("student", 0.505, 5.0)]
    report = build_report(
        "wnli", "accuracy", 4, models, ReportConfig(), baseline={"accuracy": 0.155},
        baseline_name="majority class",
    )  # fmt: skip
    assert not report["retention_meaningful"]
    assert "retention is meaningless" in report["warning"]
    assert report["models"][1]["retention_pct"] == pytest.approx(100 * 0.505 / 0.155)
    text = to_markdown(report)
    assert "325.8% (!)" in text and "Warning: retention is meaningless" in text


def test_base_model_follows_short_names_and_kdformer_folders(tmp_path):
    from kdformer.models import base_model_of

    assert base_model_of("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_of("bert-base-uncased") == "bert-base-uncased"
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "kdformer_config.yaml").write_text("teacher:\n  name: minilm-l6\n")
    assert base_model_of(str(teacher)) == "sentence-transformers/all-MiniLM-L6-v2"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert base_model_of(str(plain)) is None


# --------------------------------------------------------------------------------------------
# `kdformer evaluate` without --reference: one model, nothing to compare it with
# --------------------------------------------------------------------------------------------


def one_model_report(accuracy: float = 0.8) -> dict:
    """The report of `kdformer evaluate MODEL` (no --reference): the model is its own
    reference."""
    return build_report(
        "sst2", "accuracy", 4, [measurement("model", accuracy, 10.0)], ReportConfig(),
        baseline={"accuracy": 0.5}, baseline_name="majority class",
    )  # fmt: skip


def test_a_model_alone_has_no_retention_gain_or_speed_up_columns():
    from rich.console import Console

    from kdformer.report.render import compares, print_report

    report = one_model_report()
    assert not compares(report)
    text = to_markdown(report)
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert header == "| model | layers x hidden | accuracy | params M | MB | ms/batch | ex/s |"
    assert "| 80.00 | 0.0 | - | 10.0 |" in text
    assert "| majority class | - | 50.00 | - | - | - | - |" in text
    assert "100.0%" not in text and "% of" not in text and "1.00x" not in text
    assert "no reference model, so no retention or speed-up" in text
    console = Console(record=True, width=200)
    print_report(report, console)
    shown = console.export_text()
    assert "% of" not in shown and "100.0%" not in shown and "1.00x" not in shown
    assert "80.00" in shown and "majority class" in shown


def test_a_reference_keeps_the_comparison_columns():
    from kdformer.report.render import compares

    models = [measurement("reference", 0.80, 10.0), measurement("model", 0.70, 5.0)]
    report = build_report(
        "sst2", "accuracy", 4, models, ReportConfig(), reference="reference",
        baseline={"accuracy": 0.5}, baseline_name="majority class",
    )  # fmt: skip
    assert compares(report)
    text = to_markdown(report)
    assert "% of reference" in text and "% of gain" in text and "speed-up" in text
    assert "87.5%" in text and "2.00x" in text


def test_a_model_alone_at_the_baseline_is_warned_about_without_retention():
    report = one_model_report(accuracy=0.5)
    assert report["warning"]
    text = to_markdown(report)
    assert "Warning: the model (50.00 accuracy) does not beat the majority class" in text
    assert "retention is meaningless" not in text and "(!)" not in text
