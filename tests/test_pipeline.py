"""End-to-end: the CLI and the pipeline on a tiny teacher and 64-example slices of real GLUE data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from conftest import GLUE
from typer.testing import CliRunner

from kdformer import pipeline
from kdformer.cli import app
from kdformer.config import ConfigError, load_config

pytestmark = pytest.mark.skipif(not (GLUE / "SST-2").is_dir(), reason=f"GLUE data not at {GLUE}")
runner = CliRunner()


def overrides(teacher: Path, out: Path, task: str = "sst2", steps: int = 4) -> list[str]:
    return [
        f"output_dir={out}",
        f"teacher.name={teacher}",
        f"task.name={task}",
        f"task.data_dir={GLUE}",
        "task.max_train_samples=64",
        "task.max_eval_samples=64",
        "task.max_length=48",
        "finetune={max_steps: 4, batch_size: 16, learning_rate: 1e-3, save_steps: 2, report_to: []}",
        "student.num_layers=2",
        f"distill.train={{max_steps: {steps}, batch_size: 16, save_steps: 2, report_to: [], learning_rate: 1e-3}}",
        "distill.knowledge=[{type: logits}, {type: hidden}, {type: attention}]",
        "report.latency_repeats=2",
        "report.latency_batch_size=4",
        "report.latency_seq_length=16",
        "distill.allow_weak_teacher=true",  # a 4-step teacher learns nothing
    ]


@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_cli_run_distils_and_reports(tiny_teacher, tmp_path, task):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "configs/demo.yaml", *overrides(tiny_teacher, out, task)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == task and report["eval_examples"] == 64
    teacher, student = report["models"]
    assert (teacher["name"], student["name"]) == ("teacher", "student")
    assert teacher["shape"]["layers"] == 4 and student["shape"]["layers"] == 2
    assert student["parameters"] < teacher["parameters"]
    assert 0 <= student["metrics"]["accuracy"] <= 1 and student["retention_pct"] is not None
    if task == "mrpc":
        assert "f1" in student["metrics"]
    # The majority-class baseline: MRPC's dev slice is mostly paraphrases, as is its training set.
    floor = report["baseline"]["metrics"]["accuracy"]
    if task == "mrpc":
        assert floor > 0.5
    top, value = teacher["metrics"]["accuracy"], student["metrics"]["accuracy"]
    if top > floor:
        assert student["gain_kept_pct"] == pytest.approx(100 * (value - floor) / (top - floor))
    else:
        assert student["gain_kept_pct"] is None
    assert "| majority class |" in (out / "report.md").read_text()
    # The student loads with plain transformers, and carries its card and config.
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out / "student")
    transformers.AutoTokenizer.from_pretrained(out / "student")
    assert model.config.num_hidden_layers == 2
    card = (out / "student" / "README.md").read_text()
    assert "kdformer" in card and "retention" in card.lower() or "% of teacher" in card
    assert (out / "student" / "kdformer_config.yaml").is_file()
    assert not list((out / "student").glob("*.bin")), "weights must be safetensors only"
    # Every knowledge term is logged separately.
    state = json.loads((out / "checkpoints/student/checkpoint-4/trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_each_term_is_logged(tiny_teacher, tmp_path):
    out = tmp_path / "logged"
    args = overrides(tiny_teacher, out) + ["distill.train.logging_steps=1"]
    result = runner.invoke(app, ["run", "configs/demo.yaml", *args, "--stages", "finetune,distill"])
    assert result.exit_code == 0, result.output
    state = json.loads((out / "checkpoints/student/checkpoint-4/trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert logged and {"loss/logits", "loss/hidden", "loss/attention", "loss/hard_label"} <= set(
        logged[0]
    )


class StopAt(transformers.TrainerCallback):
    """Simulates a crash after the checkpoint at step ``at - 1`` is written."""

    def __init__(self, at: int):
        self.at = at

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("simulated interruption")


class FirstStep(transformers.TrainerCallback):
    def __init__(self):
        self.first: int | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first is None:
            self.first = state.global_step


def test_resume_after_interruption(tiny_teacher, tmp_path):
    config = load_config("configs/demo.yaml", overrides(tiny_teacher, tmp_path / "resume", steps=6))
    pipeline.finetune(config)
    with pytest.raises(KeyboardInterrupt):
        pipeline.distill(config, callbacks=[StopAt(3)])
    assert (tmp_path / "resume/checkpoints/student/checkpoint-2").is_dir()
    assert not (tmp_path / "resume/student").exists()
    # Without --resume the leftover checkpoint is not silently discarded.
    with pytest.raises(ConfigError, match="--resume"):
        pipeline.distill(config)
    first = FirstStep()
    pipeline.distill(config, resume=True, callbacks=[first])
    assert first.first == 2, "training must continue from checkpoint-2, not restart"
    state = json.loads(
        (tmp_path / "resume/checkpoints/student/checkpoint-6/trainer_state.json").read_text()
    )
    assert state["global_step"] == 6
    assert (tmp_path / "resume/student/config.json").is_file()


def test_failed_rerun_keeps_finished_student(tiny_teacher, tmp_path):
    config = load_config("configs/demo.yaml", overrides(tiny_teacher, tmp_path / "keep"))
    pipeline.run(config, stages=["finetune", "distill"])
    weights = tmp_path / "keep/student/model.safetensors"
    before = weights.read_bytes()
    # A finished stage is skipped rather than redone...
    pipeline.distill(config)
    assert weights.read_bytes() == before
    # ...and a failing --overwrite run leaves it intact.
    with pytest.raises(KeyboardInterrupt):
        pipeline.distill(config, overwrite=True, callbacks=[StopAt(1)])
    assert weights.read_bytes() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["task.data_dir=/nonexistent/glue"], "/nonexistent/glue"),
        (["student.hidden_size=64"], "width"),
        (["student.num_layers=8"], "deeper"),
        (["student.num_heads=3", "student.init=random", "student.hidden_size=33"], "attention"),
        (["distill.knowledge=[{type: hidden, layers: [[1, 9]]}]"], "teacher has 4 layers"),
        (["distill.train.lerning_rate=1"], "did you mean 'learning_rate'"),
        (["distill.knowledge=[{type: relation}]"], "logits"),
    ],
)
def test_bad_input_fails_before_training(tiny_teacher, tmp_path, extra, message):
    out = tmp_path / "bad"
    result = runner.invoke(app, ["run", "configs/demo.yaml", *overrides(tiny_teacher, out), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")
    assert not (out / "checkpoints").exists(), "nothing may be trained before the error"


def test_untrained_teacher_head_is_refused(tiny_teacher, tmp_path):
    bare = tmp_path / "bare"
    model = transformers.AutoModel.from_pretrained(tiny_teacher)  # drops the task head
    model.save_pretrained(bare)
    transformers.AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(bare)
    args = [*overrides(bare, tmp_path / "out"), "finetune=null"]
    result = runner.invoke(app, ["distill", "configs/demo.yaml", *args])
    assert result.exit_code == 2
    assert "no trained task head" in result.output


def test_evaluate_command(tiny_teacher, tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(tiny_teacher),
            "--task",
            "mrpc",
            "--data-dir",
            str(GLUE),
            "--max-eval-samples",
            "32",
            "--repeats",
            "2",
            "--latency-batch-size",
            "2",
            "--latency-seq-length",
            "16",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["eval_examples"] == 32 and {"accuracy", "f1"} <= set(
        report["models"][0]["metrics"]
    )
    assert (tmp_path / "report.md").read_text().startswith("# kdformer report: mrpc")


def test_help_on_every_command():
    for command in (
        [],
        ["finetune"],
        ["distill"],
        ["run"],
        ["evaluate"],
        ["config", "fields"],
        ["models"],
    ):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
    listed = subprocess.run(
        [sys.executable, "-m", "kdformer.cli", "--help"], capture_output=True, text=True
    )
    assert listed.returncode == 0 and "distill" in listed.stdout


def test_config_reference_is_up_to_date():
    from kdformer.docs import config_reference_markdown

    committed = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert committed.read_text() == config_reference_markdown(), (
        "docs/config.md is stale: run `kdformer config reference --output docs/config.md`"
    )
