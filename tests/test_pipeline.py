"""End-to-end: the CLI and the pipeline on a tiny teacher and 64-example slices of real GLUE data."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from conftest import GLUE, needs_data, save_constant_teacher, save_tiny_glue_teacher
from typer.testing import CliRunner

from kdformer import pipeline
from kdformer.cli import app
from kdformer.config import ConfigError, ModelConfig, StudentConfig, TrainConfig, load_config
from kdformer.students import build_student
from kdformer.tasks import build_task
from kdformer.training import TaskTrainer, training_arguments

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
        "report.memory=false",  # measured in its own tests (a fresh process per model)
        "export=false",  # the demo exports; tested in test_export.py
        "report.latency_batch_size=4",
        "report.latency_seq_length=16",
        "distill.allow_weak_teacher=true",  # a 4-step teacher learns nothing
    ]


@needs_data(GLUE)
@pytest.mark.slow
@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_cli_run_distils_and_reports(tiny_teacher, tmp_path, task):
    out = tmp_path / "run"
    # A teacher that always answers the training data's majority class: exactly as good as the
    # majority-class baseline, so the report has a known "no gain to keep".
    config = load_config("configs/demo.yaml", overrides(tiny_teacher, out, task))
    train = build_task(config.task, config.seed).load("train")
    majority = int(np.bincount(train["label"]).argmax())
    teacher = save_constant_teacher(tiny_teacher, tmp_path / "teacher", majority)
    result = runner.invoke(app, ["run", "configs/demo.yaml", *overrides(teacher, out, task)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == task and report["eval_examples"] == 64
    teacher, student = report["models"]
    assert (teacher["name"], student["name"]) == ("teacher", "student")
    assert teacher["shape"]["layers"] == 4 and student["shape"]["layers"] == 2
    assert student["parameters"] < teacher["parameters"]
    assert 0 <= student["metrics"]["accuracy"] <= 1 and student["retention_pct"] is not None
    assert ("f1" in student["metrics"]) == (task == "mrpc")
    # The majority-class baseline: MRPC's dev slice is mostly paraphrases, as is its training set.
    floor = report["baseline"]["metrics"]["accuracy"]
    if task == "mrpc":
        assert floor > 0.5
    assert teacher["metrics"]["accuracy"] == floor
    assert student["gain_kept_pct"] is None and teacher["gain_kept_pct"] is None
    assert "| majority class |" in (out / "report.md").read_text()
    # The student loads with plain transformers, and carries its card and config.
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out / "student")
    transformers.AutoTokenizer.from_pretrained(out / "student")
    assert model.config.num_hidden_layers == 2
    card = (out / "student" / "README.md").read_text()
    assert "Distilled with kdformer" in card and "retention" in card
    assert (out / "student" / "kdformer_config.yaml").is_file()
    # The card's front matter is a proper Hugging Face card with the student's results.
    from huggingface_hub import ModelCard

    data = ModelCard.load(out / "student" / "README.md").data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert data.datasets == ["nyu-mll/glue"] and data.tags == ["kdformer", "knowledge-distillation"]
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results["accuracy"] == pytest.approx(student["metrics"]["accuracy"], abs=1e-4)
    assert data.eval_results[0].dataset_config == task
    assert data.base_model is None  # a local tiny teacher names no hub model
    assert not list((out / "student").glob("*.bin")), "weights must be safetensors only"
    # Every knowledge term is logged separately.
    state = json.loads((out / "checkpoints/student/checkpoint-4/trainer_state.json").read_text())
    assert state["global_step"] == 4


@needs_data(GLUE)
@pytest.mark.slow
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


class Slow(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.25)


@needs_data(GLUE)
@pytest.mark.slow
def test_resume_after_interruption(tiny_teacher, tmp_path):
    config = load_config("configs/demo.yaml", overrides(tiny_teacher, tmp_path / "resume", steps=6))
    pipeline.finetune(config)
    with pytest.raises(KeyboardInterrupt):
        pipeline.distill(config, callbacks=[Slow(), StopAt(3)])
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
    # The training time of the interrupted run (two slow steps) is carried over, not restarted.
    carried = state["stateful_callbacks"]["TrainClock"]["args"]["seconds"]
    assert carried >= 0.5
    record = json.loads((tmp_path / "resume/student/training.json").read_text())
    assert record["steps"] == 6 and record["train_seconds"] >= carried


@needs_data(GLUE)
@pytest.mark.slow
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


@needs_data(GLUE)
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


@needs_data(GLUE)
def test_untrained_teacher_head_is_refused(tiny_teacher, tmp_path):
    bare = tmp_path / "bare"
    model = transformers.AutoModel.from_pretrained(tiny_teacher)  # drops the task head
    model.save_pretrained(bare)
    transformers.AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(bare)
    args = [*overrides(bare, tmp_path / "out"), "finetune=null"]
    result = runner.invoke(app, ["distill", "configs/demo.yaml", *args])
    assert result.exit_code == 2
    assert "no trained task head" in result.output


@needs_data(GLUE)
@pytest.mark.slow
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------------------------
# One label order, warm-up, divergence, a teacher that learnt nothing
# --------------------------------------------------------------------------------------------


def named_teacher(folder: Path) -> Path:
    return save_tiny_glue_teacher(
        folder, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )


def permuted_copy(source: Path, folder: Path) -> Path:
    """The same teacher with its outputs in the other order (positive first)."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(source)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = {0: "positive", 1: "negative"}
    model.config.label2id = {"positive": 0, "negative": 1}
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


@needs_data(GLUE)
@pytest.mark.slow
def test_a_teacher_with_another_label_order_gives_the_same_student(tmp_path):
    """Hard labels, soft labels, in-training evaluation and the report all see one order: a
    teacher whose head lists 'positive' first distils into exactly the same student."""
    plain = named_teacher(tmp_path / "plain")
    flipped = permuted_copy(plain, tmp_path / "flipped")
    task = build_task(load_config(None, [f"task.data_dir={GLUE}", "task.max_eval_samples=8"]).task)
    tokenizer = transformers.AutoTokenizer.from_pretrained(plain)
    features = task.tokenize(task.load("eval"), tokenizer)
    batch = task.collator(tokenizer)([features[0], features[1]])
    batch.pop("labels")
    a = pipeline.load_teacher(ModelConfig(name=str(plain)), task)
    b = pipeline.load_teacher(ModelConfig(name=str(flipped)), task)
    assert b.config.id2label == {0: "negative", 1: "positive"}
    assert torch.allclose(a(**batch).logits, b(**batch).logits)

    students = {}
    for name, teacher in (("plain", plain), ("flipped", flipped)):
        out = tmp_path / f"run-{name}"
        args = [*overrides(teacher, out, steps=3), "finetune=null", "distill.train.eval_steps=3"]
        args += [
            "distill.knowledge=[{type: logits, temperature: 1.0}]",
            "distill.hard_label_weight=1",
        ]
        result = runner.invoke(app, ["run", "configs/demo.yaml", *args])
        assert result.exit_code == 0, result.output
        state = json.loads(
            (out / "checkpoints/student/checkpoint-3/trainer_state.json").read_text()
        )
        evaluated = [e["eval_accuracy"] for e in state["log_history"] if "eval_accuracy" in e]
        students[name] = (
            transformers.AutoModelForSequenceClassification.from_pretrained(out / "student"),
            evaluated,
            json.loads((out / "report.json").read_text()),
        )
    (plain_student, plain_eval, plain_report), (flip_student, flip_eval, flip_report) = (
        students["plain"], students["flipped"]
    )  # fmt: skip
    assert plain_eval == flip_eval and len(plain_eval) == 1
    for key, value in plain_student.state_dict().items():
        assert torch.allclose(value, flip_student.state_dict()[key], atol=1e-6), key
    assert flip_student.config.id2label == {0: "negative", 1: "positive"}
    assert [m["metrics"] for m in plain_report["models"]] == [
        m["metrics"] for m in flip_report["models"]
    ]


@pytest.mark.parametrize(("ratio", "steps"), [(0.0, 0), (0.1, 6), (0.5, 30), (1.0, 60)])
def test_warmup_ratio_is_a_fraction_of_the_steps(tmp_path, ratio, steps):
    args = training_arguments(TrainConfig(warmup_ratio=ratio, report_to=[]), tmp_path, 0, False)
    assert args.get_warmup_steps(60) == steps


def test_group_by_length_halves_the_padding_of_mixed_length_batches(tmp_path, make_bert):
    """group_by_length hands transformers' LengthGroupedSampler every example once, in batches
    of similar lengths, so each batch pads to far fewer tokens than random batches do (here 0.61x)."""
    import datasets

    lengths = [
        int(n) for n in torch.randint(20, 400, (512,), generator=torch.Generator().manual_seed(0))
    ]
    data = datasets.Dataset.from_dict({"input_ids": [[1] * n for n in lengths]})

    def padded_tokens(group: bool) -> int:
        config = TrainConfig(batch_size=16, group_by_length=group, report_to=[])
        args = training_arguments(config, tmp_path, 0, False)
        trainer = TaskTrainer(model=make_bert(), args=args, train_dataset=data)
        order = list(trainer._get_train_sampler(data))
        assert sorted(order) == list(range(512))  # every example, once
        batches = [order[i : i + 16] for i in range(0, 512, 16)]
        return sum(16 * max(lengths[i] for i in batch) for batch in batches)

    random, grouped = padded_tokens(False), padded_tokens(True)
    assert grouped < 0.7 * random, (grouped, random)
    assert grouped >= sum(lengths)


def test_full_warmup_ramps_over_every_step(tmp_path, make_bert):
    """warmup_ratio 1.0 used to be passed as warmup_steps=1.0, i.e. a single step."""
    config = TrainConfig(warmup_ratio=1.0, learning_rate=1.0, report_to=[])
    trainer = TaskTrainer(model=make_bert(), args=training_arguments(config, tmp_path, 0, False))
    trainer.create_optimizer_and_scheduler(num_training_steps=8)
    rates = []
    for _ in range(8):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert rates == pytest.approx([k / 8 for k in range(8)])


@needs_data(GLUE)
@pytest.mark.slow
def test_a_diverged_run_stops_and_keeps_its_last_good_checkpoint(tiny_teacher, tmp_path):
    out = tmp_path / "nan"
    args = [
        *overrides(tiny_teacher, out, steps=8),
        "finetune=null",
        "distill.train.learning_rate=1e9",
    ]
    args += ["distill.train.save_steps=1", "distill.knowledge=[{type: logits}, {type: hidden}]"]
    result = runner.invoke(app, ["distill", "configs/demo.yaml", *args])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "training diverged" in message and "Nothing was saved or scored" in message
    assert "distill.train.learning_rate (now 1e+09)" in message
    assert not (out / "student").exists()
    checkpoints = sorted((out / "checkpoints/student").glob("checkpoint-*"))
    # Step 1 trains the finite initial model, so its checkpoint is always written.
    assert checkpoints and checkpoints[0].name == "checkpoint-1", checkpoints
    for checkpoint in checkpoints:  # whatever was written is finite
        weights = safetensors.torch.load_file(checkpoint / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), checkpoint
    assert f"The last good checkpoint is {checkpoints[-1]}, kept" in message
    assert "--overwrite" in message


@needs_data(GLUE)
def test_a_model_with_nan_weights_is_never_scored(tiny_teacher, tmp_path):
    broken = tmp_path / "broken"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_teacher)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    model.save_pretrained(broken)
    transformers.AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(broken)
    result = runner.invoke(
        app, ["evaluate", str(broken), "--data-dir", str(GLUE), "--max-eval-samples", "8"]
    )
    assert result.exit_code == 2
    assert "non-finite weights" in " ".join(result.output.split())


@needs_data(GLUE)
@pytest.mark.slow
def test_a_teacher_that_learnt_nothing_stops_the_run(tiny_teacher, tmp_path):
    out = tmp_path / "weak"
    args = [a for a in overrides(tiny_teacher, out) if "allow_weak_teacher" not in a]
    result = runner.invoke(app, ["run", "configs/demo.yaml", *args])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "it does not close 10% of the gap to a perfect score" in message
    assert "majority class" in message and "--allow-weak-teacher" in message
    assert (out / "teacher").is_dir() and not (out / "checkpoints/student").exists()
    forced = runner.invoke(app, ["run", "configs/demo.yaml", *args, "--allow-weak-teacher"])
    assert forced.exit_code == 0, forced.output
    report = json.loads((out / "report.json").read_text())
    assert report["retention_meaningful"] is False and "meaningless" in report["warning"]
    assert "(!)" in (out / "report.md").read_text()


@needs_data(GLUE)
def test_a_pretrained_student_with_another_label_order_is_aligned(tmp_path):
    """init: pretrained keeps the checkpoint's own head and names; the task reorders them."""
    plain = named_teacher(tmp_path / "plain")
    flipped = permuted_copy(plain, tmp_path / "flipped")
    task = build_task(load_config(None, [f"task.data_dir={GLUE}"]).task)
    teacher = pipeline.load_teacher(ModelConfig(name=str(plain)), task)
    student = build_student(
        teacher,
        StudentConfig(init="pretrained", pretrained=str(flipped)),
        task.model_class,
    )
    assert student.config.id2label == {0: "positive", 1: "negative"}, "its own names, as saved"
    task.align_model(student)
    assert torch.allclose(student.classifier.weight, teacher.classifier.weight)


def test_head_missing_keys_ignores_a_bare_encoder(tmp_path):
    source = save_tiny_glue_teacher(tmp_path / "mlm")
    encoder = transformers.AutoModel.from_pretrained(source)
    # A bare encoder reports a missing pooler without its prefix: no head is missing.
    assert pipeline.head_missing_keys(encoder, {"missing_keys": ["pooler.dense.weight"]}) == []
    head, info = transformers.AutoModelForQuestionAnswering.from_pretrained(
        source, output_loading_info=True
    )
    assert pipeline.head_missing_keys(head, info) == ["qa_outputs.bias", "qa_outputs.weight"]


def test_trainer_leaves_loss_scaling_over_accumulation_to_the_model(make_bert, tmp_path):
    from kdformer.config.knowledge import LogitsConfig
    from kdformer.objective import DistillationObjective
    from kdformer.tasks.classification import ClassificationTask
    from kdformer.teacher import LiveTeacher
    from kdformer.training import DistillationModel, DistillationTrainer

    teacher, student = make_bert(seed=0), make_bert(seed=1, layers=2)
    objective = DistillationObjective(
        [LogitsConfig()], teacher.config, student.config, ClassificationTask.outputs, 0.5
    )
    model = DistillationModel(student, objective, LiveTeacher(teacher, objective.needs))
    config = TrainConfig(gradient_accumulation_steps=2, report_to=[])
    trainer = DistillationTrainer(model=model, args=training_arguments(config, tmp_path, 0, False))
    assert DistillationModel.accepts_loss_kwargs is False
    assert trainer.model_accepts_loss_kwargs is False, "Trainer divides by the accumulation"


@needs_data(GLUE)
@pytest.mark.slow
@pytest.mark.parametrize(
    "convert, efficient",
    [
        ("{to: longformer, max_length: 256, window: 16}", "LongformerForSequenceClassification"),
        ("{to: local_global, max_length: 256, block_size: 16}", "BertForSequenceClassification"),
    ],
)
def test_convert_then_distill_in_one_run(tiny_teacher, tmp_path, convert, efficient):
    out = tmp_path / "converted-run"
    args = [
        *overrides(tiny_teacher, out),
        f"convert={convert}",
        "task.max_length=160",  # over the source's 128 positions: only the converted teacher fits
        "distill.knowledge=[{type: logits}, {type: hidden}, {type: attention}]",
    ]
    result = runner.invoke(app, ["run", "configs/demo.yaml", *args])
    assert result.exit_code == 0, result.output
    converted = transformers.AutoConfig.from_pretrained(out / "converted")
    assert converted.max_position_embeddings >= 256
    for folder, layers in (("teacher", 4), ("student", 2)):
        config = transformers.AutoConfig.from_pretrained(out / folder)
        assert config.architectures == [efficient] and config.num_hidden_layers == layers
    student = transformers.AutoConfig.from_pretrained(out / "student")
    if efficient.startswith("Longformer"):
        assert student.attention_window == [16, 16]
    else:
        assert student.lsg_block_size == 16
        from kdformer.attention import IMPLEMENTATION
        from kdformer.models import load_model

        loaded = load_model(str(out / "student"), transformers.AutoModelForSequenceClassification)
        assert loaded.config._attn_implementation == IMPLEMENTATION  # measured as it will run
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["teacher", "student"]


@needs_data(GLUE)
def test_convert_needs_finetune_and_a_supported_source(tiny_teacher, tmp_path):
    base = [*overrides(tiny_teacher, tmp_path / "x"), "convert={to: bigbird, max_length: 256}"]
    result = runner.invoke(app, ["run", "configs/demo.yaml", *base, "finetune=null"])
    assert result.exit_code != 0 and "convert: needs a `finetune:` section" in result.output


def logged_losses(out: Path, steps: int) -> list[dict]:
    state = json.loads(
        (out / f"checkpoints/student/checkpoint-{steps}/trainer_state.json").read_text()
    )
    return [entry for entry in state["log_history"] if "loss" in entry]


@needs_data(GLUE)
@pytest.mark.slow
def test_cached_teacher_trains_like_the_live_one_and_is_reused(tiny_teacher, tmp_path):
    """Distillation from the cache (float32) logs the live run's losses step by step; a second
    run (another output folder, same teacher and data) reuses the entry without the teacher."""
    cache = tmp_path / "cache"
    args = ["distill.train.logging_steps=1", "distill.knowledge=[{type: logits}, {type: hidden}]"]
    runs = {}
    for name, extra in [
        ("live", ["distill.cache=false"]),  # (the demo config turns the cache on)
        ("cached", [f"distill.cache={{enabled: true, dir: {cache}, dtype: float32}}"]),
        ("again", [f"distill.cache={{enabled: true, dir: {cache}, dtype: float32}}"]),
    ]:
        out = tmp_path / name
        if name != "live":  # the same fine-tuned teacher: copy it instead of training another
            import shutil

            shutil.copytree(tmp_path / "live" / "teacher", out / "teacher")
        result = runner.invoke(
            app,
            ["run", "configs/demo.yaml", *overrides(tiny_teacher, out, steps=6), *args, *extra,
             "--stages", "finetune,distill"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        runs[name] = (logged_losses(out, 6), result.output)
    live, cached = runs["live"][0], runs["cached"][0]
    assert len(live) == len(cached) == 6
    for a, b in zip(live, cached):
        for key in ("loss", "loss/logits", "loss/hidden", "loss/hard_label"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-5), key
    assert "teacher cache: computing" in runs["cached"][1]
    assert "teacher cache: reusing" in runs["again"][1]
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "entry.json").is_file()
    # training.json says what the cache cost: a fill in the first run, none in the second.
    first = json.loads((tmp_path / "cached" / "student" / "training.json").read_text())
    second = json.loads((tmp_path / "again" / "student" / "training.json").read_text())
    assert first["teacher_cache"]["main"]["fill_seconds"] > 0
    assert second["teacher_cache"]["main"]["fill_seconds"] == 0
    assert first["teacher_cache"]["main"]["bytes_per_input"] > 0


@needs_data(GLUE)
def test_cache_top_k_with_the_mse_logits_loss_is_refused(tiny_teacher, tmp_path):
    args = overrides(tiny_teacher, tmp_path / "run") + [
        "distill.knowledge=[{type: logits, loss: mse}]",
        "distill.cache={enabled: true, topk: 1}",
    ]
    result = runner.invoke(app, ["run", "configs/demo.yaml", *args])
    assert result.exit_code != 0 and "use loss: kl, or drop cache.topk" in result.output
    assert not (tmp_path / "run" / "teacher").exists()


@needs_data(GLUE)
@pytest.mark.slow
def test_resume_finishes_an_interrupted_overwrite(tiny_teacher, tmp_path):
    """A finished student, then `--overwrite` interrupted: `--resume` continues the new run
    (the old student stays in place until the new one is saved)."""
    config = load_config("configs/demo.yaml", overrides(tiny_teacher, tmp_path / "again", steps=6))
    pipeline.finetune(config)
    pipeline.distill(config)
    before = (tmp_path / "again/student/model.safetensors").read_bytes()
    time.sleep(0.05)  # the new checkpoints are newer than the finished model
    with pytest.raises(KeyboardInterrupt):
        pipeline.distill(config, overwrite=True, callbacks=[Slow(), StopAt(3)])
    assert (tmp_path / "again/student/model.safetensors").read_bytes() == before
    first = FirstStep()
    pipeline.distill(config, resume=True, callbacks=[first])
    assert first.first == 2, "--resume must continue the interrupted --overwrite"
    record = json.loads((tmp_path / "again/student/training.json").read_text())
    assert record["steps"] == 6
    # Once finished, a plain rerun skips the stage again.
    untouched = FirstStep()
    pipeline.distill(config, callbacks=[untouched])
    assert untouched.first is None


# --------------------------------------------------------------------------------------------
# `kdformer distill --dry-run`: with the teacher cache on, the estimate is the cache fill plus
# steps without the teacher's forward
# --------------------------------------------------------------------------------------------


def test_dry_run_time_with_the_cache_is_the_fill_plus_student_steps():
    from kdformer.pipeline.plan import StepTiming, time_lines

    # The demo's shape: 4,000 sentences, 3 epochs of batch 32 = 375 steps.
    timing = StepTiming(teacher_seconds=0.12, student_seconds=0.25, batch_rows=32)
    # fill 0.12 / 32 x 4,000 = 15 s; steps 375 x 0.25 = 93.75 s; live 375 x 0.37 = 138.75 s
    cached = " ".join(time_lines(timing, 375, 4000, 32, cached=True))
    assert "0.250 s/step measured with the teacher's outputs read from the cache" in cached
    assert "375 steps ~ 94 s" in cached
    assert "one teacher forward over the 4,000 training inputs, once" in cached
    assert "(0.120 s per batch of 32 measured) ~ 15 s" in cached
    assert "time estimate: ~ 109 s = cache fill 15 s + 375 steps 94 s" in cached
    assert "0.370 s/step, ~ 2.3 min" in cached  # the live teacher, for comparison
    live_only = " ".join(time_lines(timing, 375, 4000, 32, cached=False))
    assert "0.370 s/step measured (teacher forward 0.120 + student step 0.250" in live_only
    assert "375 steps ~ 2.3 min" in live_only and "cache" not in live_only


@needs_data(GLUE)
@pytest.mark.parametrize("cache", [True, False])
def test_dry_run_estimates_the_cache_fill_and_steps_apart(tiny_teacher, tmp_path, cache):
    result = runner.invoke(
        app,
        ["distill", "configs/demo.yaml", "--dry-run", f"output_dir={tmp_path / 'dry'}",
         f"teacher.name={tiny_teacher}", f"task.data_dir={GLUE}", "task.max_train_samples=64",
         "task.max_eval_samples=16", "task.max_length=32", "finetune=null",
         "student.num_layers=2", "distill.train.batch_size=8", f"distill.cache={str(cache).lower()}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "s/step measured" in text and "24 steps" in text  # 3 epochs of 64 / 8
    if cache:
        assert "read from the cache" in text
        assert "teacher cache fill: one teacher forward over the 64 training inputs, once" in text
        assert "time estimate: ~" in text and "with the live teacher" in text
    else:
        assert "cache" not in text.split("parameters:", 1)[1]
        assert "teacher forward" in text and "student step" in text
    assert not (tmp_path / "dry").exists()


@needs_data(GLUE)
@pytest.mark.slow
def test_evaluate_alone_prints_a_clean_report_without_self_comparison(tiny_teacher):
    """`kdformer evaluate MODEL` piped: no "% of model 100.0%" against itself, and no progress
    bar in the output (bars are for a terminal's stderr only)."""
    done = subprocess.run(
        [sys.executable, "-m", "kdformer.cli", "evaluate", str(tiny_teacher),
         "--data-dir", str(GLUE), "--max-eval-samples", "8", "--no-memory", "--repeats", "1",
         "--latency-batch-size", "2", "--latency-seq-length", "16"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout and "ms/batch" in done.stdout
    assert "% of model" not in done.stdout and "100.0%" not in done.stdout
    assert "speed-up" not in done.stdout
    for stream in (done.stdout, done.stderr):
        assert "\r" not in stream and "it/s]" not in stream and "evaluate model" not in stream
