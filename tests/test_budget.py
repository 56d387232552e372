"""The memory estimate printed before training, and the stop when training cannot fit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import transformers
from conftest import GLUE, needs_data
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

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
    # BERT parameters, counted from the architecture (vocab 1000, 512 positions, 2 token types):
    # student h=32, ffn 128: embeddings 1000*32 + 512*32 + 2*32 + LayerNorm 64 = 48,512;
    # a layer: Q, K, V, O 4*(32*32 + 32) = 4,224, LN 64, ffn 32*128 + 128 = 4,224 and
    # 128*32 + 32 = 4,128, LN 64: 12,704 (two: 25,408); pooler 1,056; classifier 32*3 + 3 = 99.
    student_params = 48_512 + 2 * 12_704 + 1_056 + 99
    # teacher h=64, ffn 256: embeddings 64,000 + 32,768 + 128 + 128 = 97,024; a layer 16,640 +
    # 128 + 16,640 + 16,448 + 128 = 49,984 (four: 199,936); pooler 4,160; classifier 195.
    teacher_params = 97_024 + 4 * 49_984 + 4_160 + 195
    real = lambda c: sum(p.numel() for p in cls.from_config(c).parameters())  # noqa: E731
    assert (real(student), real(teacher)) == (student_params, teacher_params) == (75_075, 301_315)
    assert est.trainable_bytes == 16 * 75_075 == 1_201_200  # weights, gradients, AdamW's 2 moments
    assert est.teacher_bytes == 4 * 301_315 == 1_205_260  # frozen float32 weights
    # Korthikanti et al.: s*b*h*(34 + 5*a*s/h) bytes per layer at 16 bits, b=8, s=16:
    # student h=32, a=4: 128 * (1,088 + 320) = 180,224; 360,448 in float32.
    assert layer_activation_bytes(student, 8, 16, half=False) == 360_448
    assert layer_activation_bytes(student, 8, 16, half=True) == 180_224
    # Two layers 720,896 + logits (8 x 3, with softmax and gradient: 3 x 4 x 24 = 288) + the
    # float32 embedding output (4 x 8 x 16 x 32 = 16,384).
    assert est.activation_bytes == 720_896 + 288 + 16_384 == 737_568
    # Teacher h=64, a=4: one layer at a time, 2 x 128 x (2,176 + 320) = 638,976; the 2 kept hidden
    # states and the embedding output 4 x 8 x 16 x 64 x 3 = 98,304; its logits 4 x 24 = 96.
    assert est.teacher_forward_bytes == 638_976 + 98_304 + 96 == 737_376
    half = estimate_training_memory(cls, student, [teacher], None, 8, 16, 2, "bf16", CPU)
    assert half.activation_bytes == 2 * 180_224 + 288 + 16_384  # only the layers halve
    assert half.teacher_forward_bytes == 638_976 // 2 + 98_304 + 96
    assert half.trainable_bytes == est.trainable_bytes  # float32 master weights still
    cached = estimate_training_memory(cls, student, [teacher], None, 8, 16, 2, "no", CPU, True)
    assert cached.teacher_forward_bytes == 0 and cached.teacher_bytes == est.teacher_bytes
    assert est.total_bytes == 1_201_200 + 1_205_260 + 737_568 + 737_376


class AllocationProbe(TorchDispatchMode):
    """Counts the bytes of every tensor an operation returns on a real (not ``meta``) device."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                self.bytes += value.numel() * value.element_size()
        return out


def test_counting_parameters_allocates_no_weights():
    """The estimate (and the explorer's parameter count) build the models on the meta device: a
    2-layer BERT-base-wide model has 38.6M parameters, 154 MB of float32 weights, and under
    1 MiB of real tensors is created."""
    from kdformer.explorer import count_shape_parameters

    large = transformers.BertConfig(num_hidden_layers=2)
    cls = transformers.AutoModelForSequenceClassification
    with AllocationProbe() as probe:
        est = estimate_training_memory(cls, large, [large], None, 8, 128, 0, "no", CPU)
    assert est.teacher_bytes == 4 * 38_605_058
    assert probe.bytes < 2**20, probe.bytes
    with AllocationProbe() as probe:
        assert count_shape_parameters(transformers.BertConfig(), 2, 768, 12, 3072) > 38e6
    assert probe.bytes < 2**20, probe.bytes
    # The probe sees real weights: a tiny BERT built on the CPU allocates 4 bytes a parameter.
    with AllocationProbe() as probe:
        tiny = cls.from_config(_bert(2, 32, 4))
    assert probe.bytes >= 4 * sum(p.numel() for p in tiny.parameters())
    assert torch.empty(0).device.type == "cpu"  # the default device is left alone


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


@needs_data(GLUE / "SST-2")
def test_a_long_max_length_over_short_training_inputs_is_judged_at_the_longest_input(
    tmp_path, tiny_teacher, monkeypatch, capsys
):
    """Batches pad to their own longest input, so the worst case (every batch at max_length)
    once refused SQuAD paragraphs read with 2,048-token windows for long evaluation: when it
    does not fit, the estimate is redone at the longest training input."""
    from kdformer.models import load_model_config, load_tokenizer
    from kdformer.pipeline.budget import with_head
    from kdformer.pipeline.validation import longest_training_input
    from kdformer.tasks import build_task

    config = load_config(None, [
        f"output_dir={tmp_path / 'run'}", f"teacher.name={tiny_teacher}", f"task.data_dir={GLUE}",
        "task.max_train_samples=64", "task.max_eval_samples=8", "task.max_length=128",
        "finetune={max_steps: 2, batch_size: 8, report_to: []}",
    ])  # fmt: skip
    task = build_task(config.task, config.seed)
    longest = longest_training_input(task, load_tokenizer(config.teacher))
    assert 0 < longest < 128
    teacher = with_head(load_model_config(config.teacher), task.model_kwargs())

    def total(length: int) -> int:
        args = (task.model_class, teacher, [], None, 8, length, 0, "no", CPU)
        return estimate_training_memory(*args, task=task).total_bytes

    at_longest, worst = total(longest), total(128)
    monkeypatch.setattr(
        "kdformer.pipeline.budget.available_bytes", lambda device: (at_longest + worst) // 2
    )
    pipeline.validate(config, ["finetune"])
    assert f"(at the longest training input, {longest} tokens)" in capsys.readouterr().err
    monkeypatch.setattr("kdformer.pipeline.budget.available_bytes", lambda d: at_longest - 1)
    with pytest.raises(ConfigError, match=r"finetune\.batch_size \(now 8"):
        pipeline.validate(config, ["finetune"])
