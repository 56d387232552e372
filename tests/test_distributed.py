"""Several processes for real: ``torchrun`` with two CPU processes (gloo) shards the data, and
one process fills the teacher cache, saves, evaluates and prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import GLUE, needs_data, write_tiny_sst2_config

from kdformer import distributed


@pytest.mark.slow
@needs_data(GLUE)
def test_two_cpu_processes_shard_the_data_and_save_once(tiny_teacher, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    path = write_tiny_sst2_config(
        tmp_path / "config.yaml", out, tiny_teacher, cache,
        {"epochs": 2, "batch_size": 16, "save_steps": 4}, samples=256,
    )  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "kdformer.cli", "run",
         str(path)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # 256 examples / (2 processes x 16) = 8 steps per epoch, 16 in all (one copy: 32).
    record = json.loads((out / "student" / "training.json").read_text())
    assert record["steps"] == 16 and record["epochs"] == 2.0
    state = json.loads((out / "checkpoints/student/checkpoint-16/trainer_state.json").read_text())
    assert state["global_step"] == 16
    assert len([e for e in state["log_history"] if "loss" in e]) == 16
    # One process saved, filled the cache, measured and printed.
    assert output.count("student saved to") == 1
    assert output.count("teacher cache: computing") == 1
    assert "teacher cache: reusing" not in output  # the other process is quiet
    assert output.count("kdformer report") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "config.yaml", "report.json", "report.md", "student", "teacher_eval.json"
    ]  # fmt: skip
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    import transformers

    transformers.AutoModelForSequenceClassification.from_pretrained(out / "student")


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.process_count() == 1 and distributed.is_main()
    distributed.wait()
    with distributed.main_first():
        pass
    assert str(distributed.training_device(use_cpu=True)) == "cpu"


@pytest.mark.parametrize("name", ["multi_gpu", "deepspeed_zero2", "fsdp"])
def test_shipped_accelerate_configs_parse(name):
    config = yaml.safe_load((Path("configs/accelerate") / f"{name}.yaml").read_text())
    assert config["num_processes"] >= 2 and config["compute_environment"] == "LOCAL_MACHINE"


def test_commands_that_do_not_train_refuse_several_processes(monkeypatch):
    from typer.testing import CliRunner

    from kdformer.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["study", "configs/studies/matching.yaml"])
    assert result.exit_code == 2
    assert "runs in one process" in result.output and "run, finetune, distill" in result.output
