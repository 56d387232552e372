"""Learning curves and the plateau rule: values worked out by hand, the callback stopping a run
and rebuilding its curve on resume, and the config check."""

from __future__ import annotations

import pytest
from conftest import GLUE, needs_data
from transformers import TrainerControl, TrainerState

from kdformer.config import ConfigError, TrainConfig, load_config
from kdformer.learning_curve import LearningCurve, curve_record, describe_curve, last_window_gain

# Steps 100..500; the last fifth starts after step 400.
RISING = [(100, 60.0), (200, 70.0), (300, 75.0), (400, 77.0), (500, 79.0)]
FLAT = [(100, 60.0), (200, 70.0), (300, 78.0), (400, 78.2), (500, 78.4)]


def test_last_window_gain_by_hand():
    # best overall 79, best up to step 400 (= 0.8 * 500) is 77: the last fifth added 2 points
    assert last_window_gain(RISING) == pytest.approx(2.0)
    assert last_window_gain(FLAT) == pytest.approx(0.2)
    # a dip at the end is no gain (the best stays the best), not a negative one
    assert last_window_gain([(100, 50.0), (200, 80.0), (300, 79.0)], window=0.3) == 0.0
    # window 0.5 of 500 steps: best up to step 250 is 70, best overall 79
    assert last_window_gain(RISING, window=0.5) == pytest.approx(9.0)
    # lower is better (a loss): best 1.0, best up to step 80 is 2.0, an improvement of 1.0
    assert last_window_gain([(40, 3.0), (80, 2.0), (100, 1.0)], higher_is_better=False) == 1.0


def test_a_curve_too_short_has_no_verdict():
    assert last_window_gain([]) is None
    assert last_window_gain([(500, 80.0)]) is None  # nothing at or before step 400
    record = curve_record("f1", [(500, 80.0)])
    assert record["plateau"] is None and record["last_window_gain"] is None
    assert "too few points" in describe_curve(record)


def test_curve_record_and_its_line():
    record = curve_record("accuracy", RISING, window=0.2, min_gain=0.5)
    assert record["points"] == [[s, v] for s, v in RISING]
    assert record["best"] == 79.0 and record["plateau"] is False
    assert describe_curve(record) == (
        "accuracy 79.00 at step 500 (best 79.00); not converged: the last 20% of the steps "
        "added 2.00 points (>= 0.5)"
    )
    flat = curve_record("accuracy", FLAT)
    assert flat["plateau"] is True
    assert "plateau: the last 20% of the steps added 0.20 points (< 0.5)" in describe_curve(flat)


def evaluate_all(callback: LearningCurve, points, state=None):
    state = state or TrainerState()
    control = TrainerControl()
    stopped_at = None
    for step, value in points:
        state.global_step = step
        # the task's metrics are fractions; the curve holds points (x 100)
        state.log_history.append({"step": step, "eval_accuracy": value / 100})
        callback.on_evaluate(None, state, control, metrics={"eval_accuracy": value / 100})
        if control.should_training_stop:
            stopped_at = step
            break
    return stopped_at, control


def test_callback_stops_a_run_at_its_plateau_and_saves_there():
    callback = LearningCurve("accuracy", stop_at_plateau=True)
    stopped_at, control = evaluate_all(callback, FLAT)
    # at step 300: best up to 240 is 70, best 78: +8; at 400: best up to 320 is 78, +0.2 < 0.5
    assert stopped_at == 400 and control.should_save
    assert callback.record()["stopped_at_plateau"] == 400
    assert callback.record()["points"] == [[s, v] for s, v in FLAT[:4]]  # rounded to 4 places


def test_callback_only_records_without_stop_at_plateau():
    callback = LearningCurve("accuracy")
    stopped_at, _ = evaluate_all(callback, FLAT)
    assert stopped_at is None and len(callback.points) == 5
    assert callback.record()["plateau"] is True and callback.record()["stopped_at_plateau"] is None


def test_callback_waits_for_min_points():
    # two points already flat: too few to call it a plateau
    callback = LearningCurve("accuracy", stop_at_plateau=True, min_points=3)
    stopped_at, _ = evaluate_all(callback, [(100, 80.0), (200, 80.1), (300, 80.1)])
    assert stopped_at == 300


def test_resumed_run_rebuilds_its_curve_from_the_log_history():
    state = TrainerState()
    state.log_history = [
        {"step": 100, "eval_accuracy": 0.60},
        {"step": 100, "loss": 0.7},
        {"step": 200, "eval_accuracy": 0.70},
    ]
    callback = LearningCurve("accuracy")
    callback.on_train_begin(None, state, TrainerControl())
    assert [(s, round(v, 6)) for s, v in callback.points] == [(100, 60.0), (200, 70.0)]
    evaluate_all(callback, [(300, 75.0)], state)
    assert [(s, round(v, 6)) for s, v in callback.points] == [(100, 60.0), (200, 70.0), (300, 75.0)]


def test_stop_at_plateau_needs_eval_steps():
    with pytest.raises(ConfigError, match="stop_at_plateau .* set eval_steps"):
        load_config(None, ["finetune={max_steps: 100, stop_at_plateau: true}"])
    assert TrainConfig(eval_steps=10, stop_at_plateau=True).plateau_window == 0.2


@pytest.mark.slow
@needs_data(GLUE)
def test_finetune_stops_at_its_plateau_and_records_the_curve(tiny_teacher, tmp_path):
    """A real fine-tuning run scored every 2 steps, with a plateau rule every curve meets
    (gain < 1000 points) from a tenth of the steps on: it ends at the third evaluation (step 6
    of 40: 3 points, past step 4), saves there, and writes the curve beside the teacher."""
    import json

    from kdformer import pipeline

    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"teacher.name={tiny_teacher}",
            f"task.data_dir={GLUE}",
            "task.max_train_samples=64",
            "task.max_eval_samples=32",
            "task.max_length=32",
            "finetune={max_steps: 40, batch_size: 8, eval_steps: 2, save_steps: 100, "
            "stop_at_plateau: true, plateau_gain: 1000, plateau_after: 0.1, report_to: []}",
        ],
    )
    teacher = pipeline.finetune(config)
    record = json.loads((teacher / "training.json").read_text())
    curve = record["learning_curve"]
    assert record["steps"] == 6 and curve["stopped_at_plateau"] == 6
    assert [step for step, _ in curve["points"]] == [2, 4, 6]
    assert curve["metric"] == "accuracy" and curve["plateau"] is True
    # points: 100 x accuracy, so every value is a multiple of 100/32 (32 eval sentences)
    assert all(
        abs(value * 32 / 100 - round(value * 32 / 100)) < 1e-3 for _, value in curve["points"]
    )


def test_no_stop_before_the_share_of_steps_where_early_training_sits_at_the_baseline():
    """A teacher stuck at the majority class for its first evaluations (MRPC: 68.38 three
    times) is flat, but not converged: with 1,000 steps and after=0.25 the rule waits for
    step 250, and the run goes on learning."""
    callback = LearningCurve("accuracy", stop_at_plateau=True, after=0.25)
    state = TrainerState()
    state.max_steps = 1000
    early = [(50, 68.38), (100, 68.38), (150, 68.38), (200, 68.38)]
    stopped_at, _ = evaluate_all(callback, early, state)
    assert stopped_at is None
    stopped_at, _ = evaluate_all(callback, [(250, 68.38)], state)
    assert stopped_at == 250  # from here a flat curve counts


def test_keep_best_needs_every_scored_step_saved():
    with pytest.raises(ConfigError, match="keep_best .* set eval_steps"):
        load_config(None, ["finetune={max_steps: 100, keep_best: true}"])
    with pytest.raises(ConfigError, match="save_steps 25 is not a multiple of eval_steps 10"):
        load_config(
            None, ["finetune={max_steps: 100, eval_steps: 10, save_steps: 25, keep_best: true}"]
        )
    assert TrainConfig(eval_steps=10, save_steps=30, keep_best=True).keep_best


@pytest.mark.slow
@needs_data(GLUE)
def test_keep_best_finishes_with_the_best_evaluation_not_the_last_step(tmp_path):
    """The real MiniLM teacher, scored and saved every 2 steps at a learning rate that makes its
    curve peak early: the saved teacher is the best-scoring checkpoint's, not the last step's,
    and scoring it again gives that best."""
    import json

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdformer import pipeline
    from kdformer.tasks import build_task
    from kdformer.tasks.evaluation import evaluate_model

    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            "teacher.name=minilm-l6",
            f"task.data_dir={GLUE}",
            "task.max_train_samples=64",
            "task.max_eval_samples=64",
            "task.max_length=32",
            "finetune={max_steps: 10, batch_size: 8, eval_steps: 2, save_steps: 2, "
            "learning_rate: 0.0001, keep_best: true, report_to: []}",
        ],
    )
    teacher = pipeline.finetune(config)
    curve = json.loads((teacher / "training.json").read_text())["learning_curve"]
    points = dict((step, value) for step, value in curve["points"])
    assert sorted(points) == [2, 4, 6, 8, 10]
    best_step = max(points, key=lambda s: (points[s], -s))  # the first of equal bests
    assert best_step < 10  # this curve peaks early (57.8 at step 2, 51.6 from step 4 on)
    assert curve["kept_step"] == best_step
    task = build_task(config.task, config.seed)
    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    scores = evaluate_model(model, task, task.load("eval"), tokenizer, 32, "cpu")
    assert abs(100 * scores["accuracy"] - points[best_step]) < 1e-6
