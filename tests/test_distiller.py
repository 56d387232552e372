"""The public Distiller from a plain script: tiny in-memory teacher and student, no task, no
pipeline; it trains, logs each term, saves a student that loads with plain from_pretrained,
and resumes from its checkpoint."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from conftest import tiny_bert, tiny_bert_config
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, default_data_collator

from kdformer import Distiller
from kdformer.config import ConfigError, TrainConfig
from kdformer.config.knowledge import HiddenConfig, LogitsConfig
from kdformer.features import OutputSpec
from kdformer.models import resolve_name
from kdformer.objective import DistillationObjective
from kdformer.teacher import LiveTeacher
from kdformer.training import DistillationModel


def features(rows: int = 16, length: int = 8) -> Dataset:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (rows, length), generator=generator)
    return Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * length] * rows,
            "labels": (ids[:, 0] % 2).tolist(),
        }
    )


def build(tmp_path, steps: int = 4, save_steps: int = 500):
    teacher = tiny_bert(seed=0)
    student = tiny_bert(seed=1, layers=2, hidden=16, heads=2, intermediate=32).train()
    objective = DistillationObjective(
        [LogitsConfig(temperature=2.0), HiddenConfig()],
        teacher.config,
        student.config,
        [OutputSpec("logits", label_key="labels")],
        hard_label_weight=0.5,
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_name("minilm-l6"))
    train = TrainConfig(
        max_steps=steps, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, logging_steps=1,
        save_steps=save_steps, report_to=[],
    )  # fmt: skip
    distiller = Distiller(
        student, teacher, objective, None, tokenizer, train, tmp_path / "checkpoints",
        train_features=features(), collator=default_data_collator,
    )  # fmt: skip
    return distiller, teacher


def test_distiller_trains_the_student_not_the_teacher_and_saves_it(tmp_path):
    distiller, teacher = build(tmp_path)
    before_student = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    before_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = distiller.train()

    assert trainer.state.global_step == 4
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before_teacher.items())
    changed = [
        k
        for k, v in distiller.student.state_dict().items()
        if not torch.equal(v, before_student[k])
    ]
    assert any("encoder.layer.0" in k for k in changed) and any("classifier" in k for k in changed)
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"loss/logits", "loss/hidden", "loss/hard_label"} <= logged, logged

    folder = distiller.save(tmp_path / "student")
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert loaded.config.num_hidden_layers == 2 and loaded.config.hidden_size == 16
    saved = loaded.state_dict()
    for name, value in distiller.student.state_dict().items():
        assert torch.equal(saved[name], value), name
    # The hidden-state projection (16 -> 32) trained with the student but stays behind.
    assert not any("projection" in k or "objective" in k for k in saved)
    assert (folder / "tokenizer.json").is_file()  # a fast tokenizer: one file holds it all


def test_distiller_resumes_from_its_checkpoint(tmp_path):
    first, _ = build(tmp_path, steps=2, save_steps=2)
    first.train()
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    second, _ = build(tmp_path, steps=4, save_steps=2)
    trainer = second.train(resume=True)
    assert trainer.state.global_step == 4
    steps_trained = [e["step"] for e in trainer.state.log_history if "loss" in e]
    assert steps_trained[-1] == 4 and 1 not in steps_trained[steps_trained.index(2) + 1 :]


class GradientsBeforeEachUpdate(transformers.TrainerCallback):
    """Copies of every gradient as the optimiser is about to step (after clipping)."""

    def __init__(self):
        self.updates: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        self.updates.append(grads)


def test_gradient_accumulation_steps_with_the_gradient_of_one_large_batch(tmp_path):
    """Two micro-batches of 2 accumulated give each optimiser step the gradient (and the logged
    loss) of one batch of all 4 examples: the objective averages over its own batch, so the
    Trainer must divide each micro-batch's loss by the accumulation steps (summed instead, the
    gradient would be twice as large); 4 examples x 2 epochs make 2 optimiser steps."""
    teacher = tiny_bert(seed=0)
    config = tiny_bert_config(layers=2, hidden=16, heads=2, intermediate=32)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0  # deterministic
    torch.manual_seed(1)
    student = transformers.BertForSequenceClassification(config)
    objective = DistillationObjective(
        [LogitsConfig(temperature=2.0), HiddenConfig()], teacher.config, student.config,
        [OutputSpec("logits", label_key="labels")], hard_label_weight=0.5,
    )  # fmt: skip
    data = features(rows=4)

    # The reference: one forward and backward of all 4 examples, from the same initial weights.
    reference = DistillationModel(
        copy.deepcopy(student).train(),
        copy.deepcopy(objective),
        LiveTeacher(teacher, objective.needs),
    )
    loss = reference(**default_data_collator(list(data)))["loss"]
    loss.backward()
    expected = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    assert any(n.startswith("objective.") for n in expected)  # the projections train too

    train = TrainConfig(
        epochs=2, batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-3,
        max_grad_norm=1e9, logging_steps=1, save_steps=500, report_to=[],
    )  # fmt: skip
    probe = GradientsBeforeEachUpdate()
    distiller = Distiller(
        student, teacher, objective, None, None, train, tmp_path / "checkpoints",
        train_features=data, collator=default_data_collator, callbacks=[probe],
    )  # fmt: skip
    trainer = distiller.train()

    assert trainer.state.global_step == 2 and len(probe.updates) == 2
    first = probe.updates[0]
    assert first.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(first[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    logged = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert logged[0] == pytest.approx(float(loss.detach()), abs=1e-3)


def test_distiller_without_task_needs_features_and_collator(tmp_path):
    teacher = tiny_bert()
    objective = DistillationObjective(
        [LogitsConfig()], teacher.config, teacher.config, [OutputSpec("logits")]
    )
    with pytest.raises(ConfigError, match="train_features and a collator"):
        Distiller(tiny_bert(), teacher, objective, None, None, TrainConfig(), tmp_path)
