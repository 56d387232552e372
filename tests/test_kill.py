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
from conftest import GLUE, needs_data, wait_for_file, write_tiny_sst2_config


def config(tmp_path: Path, teacher: Path, name: str) -> Path:
    train = {"max_steps": 40, "batch_size": 8, "save_steps": 2, "save_total_limit": 20}
    return write_tiny_sst2_config(
        tmp_path / f"{name}.yaml", tmp_path / name, teacher, tmp_path / "cache", train, 128
    )


def command(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kdformer.cli", "distill", str(path), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@needs_data(GLUE)
@pytest.mark.slow
def test_resume_after_kill_9_is_bit_exact(tiny_teacher, tmp_path):
    whole = config(tmp_path, tiny_teacher, "whole")
    subprocess.run(command(whole), check=True, env=ENV, capture_output=True, timeout=600)

    killed = config(tmp_path, tiny_teacher, "killed")
    process = subprocess.Popen(
        command(killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = tmp_path / "killed" / "checkpoints" / "student" / "checkpoint-6"
    wait_for_file(process, checkpoint / "trainer_state.json")
    process.send_signal(signal.SIGKILL)
    process.wait()
    # 34 of 40 steps were left when the kill landed: the run cannot have finished.
    assert not (tmp_path / "killed" / "student").exists(), "the run finished before the kill"
    result = subprocess.run(
        command(killed, "--resume"), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    a = safetensors.torch.load_file(tmp_path / "whole" / "student" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "killed" / "student" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), name


#: Loaded by the child CLI process (PYTHONPATH) before transformers: the student's final weights
#: are written half, flushed, and finished 60 s later, so a real SIGKILL lands mid-write.
SLOW_SAVE = """
import os, time
import safetensors.torch

_save_file = safetensors.torch.save_file

def save_file(tensors, filename, metadata=None):
    if "student.partial" not in str(filename):
        return _save_file(tensors, filename, metadata=metadata)
    data = safetensors.torch.save(tensors, metadata=metadata)
    with open(filename, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        open(str(filename) + ".half-written", "w").close()
        time.sleep(60)
        handle.write(data[len(data) // 2 :])

safetensors.torch.save_file = save_file
"""


def _kill_during_final_save(args: list[str], partial: Path, tmp_path: Path) -> None:
    hook = tmp_path / "slow_save"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SLOW_SAVE)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = partial / "model.safetensors.half-written"
    deadline = time.time() + 300
    while not marker.is_file():
        assert process.poll() is None, "the run ended before its final save"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


@needs_data(GLUE)
@pytest.mark.slow
def test_a_kill_during_the_final_save_never_leaves_a_half_written_model(tiny_teacher, tmp_path):
    from kdformer.pipeline import is_finished

    train = {"max_steps": 6, "batch_size": 8, "save_steps": 2}
    path = write_tiny_sst2_config(
        tmp_path / "run.yaml", tmp_path / "run", tiny_teacher, tmp_path / "cache", train, 64
    )
    student = tmp_path / "run" / "student"
    partial = tmp_path / "run" / "student.partial"

    # First save killed mid-write: no student at all, the half file stays in the scratch folder.
    _kill_during_final_save(command(path), partial, tmp_path)
    assert not student.exists() and not is_finished(student)
    assert (partial / "model.safetensors").stat().st_size > 0
    assert not is_finished(partial)  # a truncated file never reads as a model
    result = subprocess.run(command(path, "--resume"), env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert is_finished(student) and not partial.exists()
    first = safetensors.torch.load_file(student / "model.safetensors")

    # An --overwrite killed during its save: the finished student stays, untouched.
    _kill_during_final_save(command(path, "--overwrite"), partial, tmp_path)
    assert is_finished(student)
    kept = safetensors.torch.load_file(student / "model.safetensors")
    assert all((kept[k] == first[k]).all() for k in first)
    skipped = subprocess.run(command(path), env=ENV, capture_output=True, text=True)
    assert skipped.returncode == 0 and "skipping" in skipped.stderr


def test_a_swap_killed_between_its_renames_puts_the_finished_model_back(tmp_path, tiny_teacher):
    """The one instant a save has no model in place (old moved aside, new not yet renamed in):
    the next start puts the old one back."""
    import shutil

    from kdformer.pipeline import is_finished
    from kdformer.pipeline.outputs import start_mode

    final = tmp_path / "student"
    shutil.copytree(tiny_teacher, tmp_path / "student.previous")
    (tmp_path / "student.partial").mkdir()  # the new one, not renamed in yet
    assert start_mode(final, tmp_path / "checkpoints", False, False) == "skip"
    assert is_finished(final) and not (tmp_path / "student.previous").exists()


@needs_data(GLUE)
@pytest.mark.slow
def test_sigterm_says_what_was_kept_and_resume_survives_a_checkpoint_without_weights(
    tiny_teacher, tmp_path
):
    """SIGTERM (docker stop, a scheduler) ends the run as Ctrl-C does, exit 143 with the
    command that resumes; the newest checkpoint then loses its weights, and --resume falls
    back to the one before it (saying so) and finishes."""
    path = config(tmp_path, tiny_teacher, "term")
    process = subprocess.Popen(
        command(path), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    checkpoints = tmp_path / "term" / "checkpoints" / "student"
    wait_for_file(process, checkpoints / "checkpoint-6" / "trainer_state.json")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    text = " ".join(stderr.split())
    assert "terminated (SIGTERM)" in text and "--resume" in text.split("Continue with:")[1]
    written = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    newest, before = written[-1], written[-2]
    (newest / "model.safetensors").unlink()
    result = subprocess.run(
        command(path, "--resume"), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = " ".join(result.stderr.split())
    assert (
        f"{newest} cannot be resumed from (its weights are missing); resuming from {before.name}"
        in said
    )
    assert (tmp_path / "term" / "student" / "model.safetensors").is_file()
