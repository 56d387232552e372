"""A real ``kill -9`` of a real CLI run: resuming gives the uninterrupted run's student, bit for
bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
from conftest import GLUE, needs_data, write_tiny_sst2_config

pytestmark = needs_data(GLUE)


def config(tmp_path: Path, teacher: Path, name: str) -> Path:
    train = {"max_steps": 40, "batch_size": 8, "save_steps": 2, "save_total_limit": 20}
    return write_tiny_sst2_config(
        tmp_path / f"{name}.yaml", tmp_path / name, teacher, tmp_path / "cache", train, 128
    )


def command(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kdformer.cli", "distill", str(path), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_resume_after_kill_9_is_bit_exact(tiny_teacher, tmp_path):
    whole = config(tmp_path, tiny_teacher, "whole")
    subprocess.run(command(whole), check=True, env=ENV, capture_output=True, timeout=600)

    killed = config(tmp_path, tiny_teacher, "killed")
    process = subprocess.Popen(
        command(killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = tmp_path / "killed" / "checkpoints" / "student" / "checkpoint-6"
    deadline = time.time() + 300
    while not (checkpoint / "trainer_state.json").is_file():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if (tmp_path / "killed" / "student").exists():
        pytest.skip("the run finished before the kill landed (machine too fast to interrupt)")
    result = subprocess.run(
        command(killed, "--resume"), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    a = safetensors.torch.load_file(tmp_path / "whole" / "student" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "killed" / "student" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), name
