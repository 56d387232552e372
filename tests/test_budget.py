"""The memory estimate printed before training, and the stop when training cannot fit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import transformers
from conftest import GLUE, needs_data

from kdformer import pipeline
from kdformer.config import ConfigError, load_config
from kdformer.pipeline.budget import (
    check_fits,
    estimate_training_memory,
    layer_activation_bytes,
)

CPU = torch.device("cpu")


def _bert(layers: int, hidden: int, heads: int, labels: int = 2) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=512,
        num_labels=labels,
    )  # fmt: skip


def test_estimate_by_hand():
    student, teacher = _bert(2, 32, 4, labels=3), _bert(4, 64, 4, labels=3)
    cls = transformers.AutoModelForSequenceClassification
    est = estimate_training_memory(cls, student, [teacher], None, 8, 16, 2, "no", CPU)
    params = lambda c: sum(p.numel() for p in cls.from_config(c).parameters())  # noqa: E731
    assert est.trainable_bytes == 16 * params(student)
    assert est.teacher_bytes == 4 * params(teacher)
    # Korthikanti et al.: b*s*(34h + 5*a*s) bytes at 16 bits per layer, doubled in fp32.
    per_layer = 8 * 16 * (34 * 32 + 5 * 4 * 16)
    assert layer_activation_bytes(student, 8, 16, half=False) == 2 * per_layer
    logits = 8 * 3
    assert est.activation_bytes == 2 * 2 * per_layer + 3 * 4 * logits + 4 * 8 * 16 * 32
    teacher_layer = 2 * 8 * 16 * (34 * 64 + 5 * 4 * 16)
    assert est.teacher_forward_bytes == teacher_layer + 4 * 8 * 16 * 64 * 3 + 4 * logits
    half = estimate_training_memory(cls, student, [teacher], None, 8, 16, 2, "bf16", CPU)
    assert half.activation_bytes < est.activation_bytes
    cached = estimate_training_memory(cls, student, [teacher], None, 8, 16, 2, "no", CPU, True)
    assert cached.teacher_forward_bytes == 0 and cached.teacher_bytes == est.teacher_bytes


@pytest.mark.slow
def test_estimate_is_close_to_a_measured_training_step():
    """A fresh process trains one AdamW step of a 4 x 256 BERT on 16 x 256 tokens; its peak
    resident growth (gradients, optimiser state, activations) is within 35% of the estimate."""
    script = """
import torch, transformers
from kdformer.pipeline.budget import estimate_training_memory
from kdformer.report.memory import status_kib
cfg = transformers.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                              intermediate_size=1024, num_labels=2)
cls = transformers.AutoModelForSequenceClassification
est = estimate_training_memory(cls, cfg, [], None, 16, 256, 0, "no", torch.device("cpu"))
model = cls.from_config(cfg).train()
weights = 4 * sum(p.numel() for p in model.parameters())
optimizer = torch.optim.AdamW(model.parameters())
ids = torch.randint(1000, 30000, (16, 256), generator=torch.Generator().manual_seed(0))
base = status_kib("VmRSS")
model(input_ids=ids, labels=torch.zeros(16, dtype=torch.long)).loss.backward()
optimizer.step()
print((status_kib("VmHWM") - base) * 1024, est.total_bytes - weights)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    measured, estimated = map(int, done.stdout.split()[-2:])
    assert 0.65 * measured <= estimated <= 1.35 * measured, (measured, estimated)


def test_check_fits_names_what_to_lower():
    cls = transformers.AutoModelForSequenceClassification
    est = estimate_training_memory(cls, _bert(2, 32, 4), [], None, 8, 16, 0, "no", CPU)
    est.available_bytes = est.total_bytes - 1
    with pytest.raises(ConfigError, match=r"will not fit: .*batch_size \(now 8.*memory_check"):
        check_fits(est, "distill.train", 8)
    est.available_bytes = est.total_bytes
    check_fits(est, "distill.train", 8)


@pytest.mark.slow
@needs_data(GLUE / "SST-2")
def test_a_run_that_cannot_fit_stops_before_training(tmp_path, tiny_teacher, monkeypatch, capsys):
    overrides = [
        f"output_dir={tmp_path / 'run'}", f"teacher.name={tiny_teacher}", f"task.data_dir={GLUE}",
        "task.max_train_samples=32", "task.max_eval_samples=8", "task.max_length=32",
        "student.num_layers=2", "distill.allow_weak_teacher=true",
        "distill.train={max_steps: 2, batch_size: 8, report_to: []}", "report.memory=false",
    ]  # fmt: skip
    config = load_config(None, overrides)
    monkeypatch.setattr("kdformer.pipeline.budget.available_bytes", lambda device: 2**20)
    with pytest.raises(ConfigError, match=r"distill\.train\.batch_size \(now 8"):
        pipeline.run(config)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "student").exists()
    assert "distill.train: memory estimate:" in capsys.readouterr().err
    # memory_check: false tries anyway (and here it fits, of course).
    config = load_config(None, [*overrides, "distill.train.memory_check=false"])
    pipeline.run(config, stages=["distill"])
    assert pipeline.is_finished(tmp_path / "run" / "student")
