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

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def two_processes(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m kdformer.cli ARGS``: two CPU processes
    (gloo), as a user launches them."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "kdformer.cli", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        stdout, stderr = process.communicate(timeout=600)
    except BaseException:  # a timeout, pytest's included: stop the workers too
        # torchrun stops its workers on SIGTERM; they run in sessions of their own, which a
        # SIGKILL of torchrun alone would leave running.
        process.terminate()
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
@needs_data(GLUE)
def test_two_cpu_processes_shard_the_data_and_save_once(tiny_teacher, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    path = write_tiny_sst2_config(
        tmp_path / "config.yaml", out, tiny_teacher, cache,
        {"epochs": 2, "batch_size": 16, "save_steps": 4}, samples=256,
    )  # fmt: skip
    result = two_processes("run", str(path))
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


#: Loaded by both processes (PYTHONPATH) when transformers' callbacks are first imported: each
#: process notes the step it starts training at (a resumed run starts at its checkpoint's) and,
#: with KDFORMER_TEST_KILL_AT=N, waits until both have written checkpoint-N, then dies by
#: SIGKILL as a job killed by its scheduler does: no handler runs, nothing is saved after it.
INTERRUPT = """
import importlib.abc, importlib.util, os, signal, sys

MARKS = os.environ["KDFORMER_TEST_MARKS"]
KILL_AT = int(os.environ.get("KDFORMER_TEST_KILL_AT", "0"))


def patch(module):
    handler = module.CallbackHandler
    on_step_begin, on_save = handler.on_step_begin, handler.on_save
    started = []

    def step_begin(self, args, state, control):
        if not started:
            started.append(state.global_step)
            with open(os.path.join(MARKS, f"start-{args.process_index}"), "w") as file:
                file.write(str(state.global_step))
        return on_step_begin(self, args, state, control)

    def save(self, args, state, control):
        control = on_save(self, args, state, control)
        if state.global_step == KILL_AT:
            import torch.distributed

            torch.distributed.barrier()  # both processes wrote their part of the checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
        return control

    handler.on_step_begin, handler.on_save = step_begin, save


class PatchCallbacks(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "transformers.trainer_callback":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, PatchCallbacks())
"""


@pytest.mark.slow
@needs_data(GLUE)
def test_two_processes_killed_after_a_checkpoint_resume_from_it(tiny_teacher, tmp_path):
    """Both processes of a two-process run die by SIGKILL right after checkpoint-4 of 8;
    --resume (two processes again) continues from step 4 in both, and finishes at step 8 with
    one student and the whole log history."""
    out = tmp_path / "run"
    path = write_tiny_sst2_config(
        tmp_path / "config.yaml", out, tiny_teacher, tmp_path / "cache",
        {"max_steps": 8, "batch_size": 8, "save_steps": 2, "save_total_limit": 10}, samples=128,
    )  # fmt: skip
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(INTERRUPT)
    pythonpath = os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])
    marks = {"killed": tmp_path / "killed", "resumed": tmp_path / "resumed"}
    for folder in marks.values():
        folder.mkdir()

    def env(run: str, **extra: str) -> dict[str, str]:
        return {**ENV, "PYTHONPATH": pythonpath, "KDFORMER_TEST_MARKS": str(marks[run]), **extra}

    killed = two_processes("distill", str(path), env=env("killed", KDFORMER_TEST_KILL_AT="4"))
    assert killed.returncode != 0, killed.stderr[-3000:]
    checkpoints = out / "checkpoints" / "student"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == [
        "checkpoint-2", "checkpoint-4"
    ]  # fmt: skip
    state = json.loads((checkpoints / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert {p.name for p in (checkpoints / "checkpoint-4").glob("rng_state_*.pth")} == {
        "rng_state_0.pth", "rng_state_1.pth"
    }  # fmt: skip
    assert not (out / "student").exists()
    assert [(marks["killed"] / f"start-{rank}").read_text() for rank in (0, 1)] == ["0", "0"]
    written = (checkpoints / "checkpoint-4" / "trainer_state.json").stat().st_mtime_ns

    resumed = two_processes("distill", str(path), "--resume", env=env("resumed"))
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-4000:]
    # Both processes started at the checkpoint's step, not at 0.
    assert [(marks["resumed"] / f"start-{rank}").read_text() for rank in (0, 1)] == ["4", "4"]
    assert (checkpoints / "checkpoint-4" / "trainer_state.json").stat().st_mtime_ns == written
    record = json.loads((out / "student" / "training.json").read_text())
    assert record["steps"] == 8
    final = json.loads((checkpoints / "checkpoint-8" / "trainer_state.json").read_text())
    assert final["global_step"] == 8 and final["max_steps"] == 8
    # The log history runs on from the killed run's: each step logged once, 1 to 8.
    logged = [e["step"] for e in final["log_history"] if "loss" in e]
    assert logged == list(range(1, 9))
    assert [e for e in final["log_history"] if e["step"] <= 4] == state["log_history"]
    assert output.count("student saved to") == 1
    assert "teacher cache: computing" not in output  # the killed run filled it
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
