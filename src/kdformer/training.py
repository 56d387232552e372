"""A thin layer over ``transformers.Trainer``.

Mixed precision, gradient accumulation, checkpoints and resume, periodic evaluation, TensorBoard
and multi-GPU (``accelerate launch`` / ``torchrun``) all come from the library; kdformer adds
only the distillation loss and per-term logging.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from kdformer.config import ConfigError, TrainConfig
from kdformer.features import extract_features, prepare_model
from kdformer.objective import DistillationObjective
from kdformer.teacher import TeacherSignal


class DistillationModel(nn.Module):
    """Student and objective in one module, so the Trainer optimises, checkpoints and wraps both
    (the objective owns trainable projections). The teacher rides along unregistered: frozen,
    never optimised, never saved."""

    def __init__(
        self, student: nn.Module, objective: DistillationObjective, teacher: TeacherSignal
    ):
        super().__init__()
        self.student = student
        self.objective = objective
        self._teacher = [teacher]  # a list keeps it out of parameters() and state_dict()
        self.last_terms: dict[str, torch.Tensor] = {}
        prepare_model(student, objective.needs_for("student"))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **extra: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": input_ids, **extra}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        student = extract_features(self.student, inputs, self.objective.needs_for("student"))
        # With no knowledge terms (a hard-label-only baseline) the teacher has nothing to give.
        teacher = self._teacher[0](inputs) if len(self.objective.terms) else None
        out = self.objective(student, teacher, labels, attention_mask)
        self.last_terms = out.terms
        return {"loss": out.loss, "logits": student.logits}


class ProgressCallback(TrainerCallback):
    """Tells the objective how far training is (``global_step / max_steps``, 0..1) for scheduled
    values such as the logits temperature and the hard-label weight: at the start (also after a
    resume) and before and after every optimiser step, so step k (0-based) of N sees k / N and
    the end of training 1."""

    def __init__(self, objective: DistillationObjective):
        self.objective = objective

    def _update(self, state: Any) -> None:
        if state.max_steps and state.max_steps > 0:
            self.objective.set_progress(state.global_step / state.max_steps)

    def on_train_begin(self, args, state, control, **kwargs):
        self._update(state)

    def on_step_begin(self, args, state, control, **kwargs):
        self._update(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._update(state)


class DistillationTrainer(Trainer):
    """``Trainer`` whose loss is the distillation objective; logs every term as ``loss/<name>``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_count = 0
        objective = getattr(self.model, "objective", None)
        if isinstance(objective, DistillationObjective):
            self.add_callback(ProgressCallback(objective))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            for name, value in self.accelerator.unwrap_model(model).last_terms.items():
                self._term_sums[name] += float(value)
            self._term_count += 1
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_count:
            for name, total in self._term_sums.items():
                logs[f"loss/{name}"] = round(total / self._term_count, 6)
            self._term_sums.clear()
            self._term_count = 0
        super().log(logs, start_time)


def training_arguments(
    train: TrainConfig, checkpoint_dir: Path, seed: int, evaluate_during_training: bool
) -> TrainingArguments:
    """Map kdformer's ``TrainConfig`` onto ``TrainingArguments``."""
    if train.mixed_precision == "fp16" and (train.use_cpu or not torch.cuda.is_available()):
        raise ConfigError(
            "mixed_precision: fp16 needs a CUDA GPU and none is in use; use bf16 or no"
        )
    steps_eval = evaluate_during_training and train.eval_steps is not None
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,
        lr_scheduler_type=train.lr_scheduler,
        max_grad_norm=train.max_grad_norm,
        fp16=train.mixed_precision == "fp16",
        bf16=train.mixed_precision == "bf16",
        logging_steps=train.logging_steps,
        eval_strategy="steps" if steps_eval else "no",
        eval_steps=train.eval_steps if steps_eval else None,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        dataloader_num_workers=train.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available() and not train.use_cpu,
        report_to=list(train.report_to) or "none",
        seed=seed,
        data_seed=seed,
        use_cpu=train.use_cpu,
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=False,
    )


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder with a trainer state, or None."""
    found = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None
