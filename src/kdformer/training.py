"""A thin layer over ``transformers.Trainer``.

Mixed precision, gradient accumulation, checkpoints and resume, TensorBoard and multi-GPU
(``accelerate launch`` / ``torchrun``) all come from the library; kdformer adds the
distillation loss with per-term logging, evaluation through the task's own scorer (so token
and span tasks are scored on words and answers, not on padded logits), and a guard that stops
a diverged run before it writes a non-finite checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState

from kdformer.alignment import teacher_inputs
from kdformer.config import ConfigError, TrainConfig
from kdformer.features import MODEL_INPUTS, extract_features, prepare_model
from kdformer.learning_curve import LearningCurve
from kdformer.models import non_finite_parameters, safetensors_problem, share_files
from kdformer.objective import DistillationObjective
from kdformer.tasks.evaluation import evaluate_model
from kdformer.teacher import TeacherSignal


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing each large block back to the
    operating system. A training step on the CPU frees and reallocates its large buffers every
    step (gradients are set to None; a word-embedding gradient alone is 47 MB for BERT's
    vocabulary at width 384); handed back, each returns as fresh pages that fault on first
    touch, which cost a MiniLM student 21% of its step (293 -> 231 ms: benchmarks/
    bench_freed_memory.py). The
    process keeps its peak memory instead. Linux (glibc) only; a no-op elsewhere, or when
    ``KDFORMER_KEEP_FREED_MEMORY=0``. Returns whether it took effect."""
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("KDFORMER_KEEP_FREED_MEMORY") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    return bool(
        libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 2**31 - 1)
    )


class TrainingDiverged(RuntimeError):
    """The loss or the weights became non-finite; nothing non-finite was saved."""


def aliased_keys(module: nn.Module) -> list[str]:
    """State-dict names that repeat a tensor seen under an earlier name (tied weights, e.g. a
    masked LM's decoder, which is its word embeddings)."""
    seen: set[tuple[int, int]] = set()
    repeats = []
    for name, tensor in module.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            repeats.append(name)
        seen.add(key)
    return repeats


class DistillationModel(nn.Module):
    """Student and objective in one module, so the Trainer optimises, checkpoints and wraps both
    (the objective owns trainable projections). The teacher rides along unregistered: frozen,
    never optimised, never saved.

    Checkpoints are plain state dicts, which cannot hold one tensor under two names, so a
    student's tied weights are saved once (``_keys_to_ignore_on_save``) and tied again on
    resume (``tie_weights``)."""

    accepts_loss_kwargs = False
    """The objective averages over its own batch: Trainer must scale the loss for gradient
    accumulation itself (``forward(**batch)`` would otherwise look like it takes loss kwargs)."""

    def __init__(
        self, student: nn.Module, objective: DistillationObjective, teacher: TeacherSignal
    ):
        super().__init__()
        self.student = student
        self.objective = objective
        self._teacher = [teacher]  # a list keeps it out of parameters() and state_dict()
        self.last_terms: dict[str, torch.Tensor] = {}
        self._keys_to_ignore_on_save = aliased_keys(self) or None
        prepare_model(student, objective.needs_for("student"))

    def tie_weights(self) -> None:
        if hasattr(self.student, "tie_weights"):
            self.student.tie_weights()

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
        student = extract_features(self.student, inputs, self.objective.needs_for("student"))
        # With no knowledge terms (a hard-label-only baseline) the teacher has nothing to give.
        # It gets the whole batch: a cached teacher reads its rows by the batch's row index.
        # A student with its own vocabulary: the teacher reads its own tokens (teacher_*).
        teacher = self._teacher[0](teacher_inputs(batch)) if len(self.objective.terms) else None
        out = self.objective(student, teacher, batch)
        self.last_terms = out.terms
        return {"loss": out.loss, **student.outputs}


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


class FiniteWeightsCallback(TrainerCallback):
    """Checks the weights before every checkpoint save and at the end of training, so a
    diverged run never writes a non-finite checkpoint (the save comes after ``on_step_end``)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and (control.should_save or state.global_step >= state.max_steps):
            bad = non_finite_parameters(model)
            if bad:
                raise TrainingDiverged(
                    f"the weights became non-finite at step {state.global_step} (e.g. {bad})"
                )


class TrainClock(TrainerCallback, ExportableState):
    """Seconds spent training, carried across resumes in the checkpoint's trainer state (the
    library's own ``train_runtime`` restarts at zero on resume), so cost figures stay honest
    for interrupted runs."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = float(seconds)
        self._since: float | None = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._since is not None:
            self.seconds += now - self._since
        self._since = now

    def on_train_begin(self, args, state, control, **kwargs):
        self._since = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._tick()

    def on_train_end(self, args, state, control, **kwargs):
        self._tick()
        self._since = None

    def state(self) -> dict:
        return {"args": {"seconds": round(self.seconds, 3)}, "attributes": {}}


@dataclass
class KDTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with warm-up as a fraction of the training steps. transformers 5
    reads a ``warmup_steps`` value below 1 as a fraction but 1.0 as one step, so kdformer's
    ``warmup_ratio: 1.0`` would have warmed up for a single step."""

    warmup_fraction: float = field(default=0.0, metadata={"help": "Warm-up steps / all steps."})

    def get_warmup_steps(self, num_training_steps: int) -> int:
        return math.ceil(num_training_steps * self.warmup_fraction)


class TaskTrainer(Trainer):
    """``Trainer`` that evaluates through the task's scorer and stops on non-finite losses.

    ``task``, ``eval_examples`` and ``eval_features``: what :meth:`evaluate` scores (the raw
    evaluation examples and their tokenised features); ``pad_to``: the run's one batch length,
    when its model family needs one (evaluation batches get it too)."""

    def __init__(
        self,
        *args: Any,
        task: Any = None,
        eval_examples: Any = None,
        eval_features: Any = None,
        pad_to: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.task = task
        self.eval_examples = eval_examples
        self.eval_features = eval_features
        self.pad_to = pad_to
        self.add_callback(FiniteWeightsCallback())
        self.add_callback(TrainClock())

    @property
    def learning_curve(self) -> dict[str, Any] | None:
        """The main metric against steps and the plateau verdict (None: nothing was scored
        during training)."""
        curves = [c for c in self.callback_handler.callbacks if isinstance(c, LearningCurve)]
        return curves[0].record() if curves and curves[0].points else None

    @property
    def train_seconds(self) -> float:
        """Seconds spent in training steps, this run and the runs it resumed."""
        clock = next(c for c in self.callback_handler.callbacks if isinstance(c, TrainClock))
        return clock.seconds

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """A DistillationModel is saved as a plain state dict, without the repeated names of
        tied weights (safetensors refuses one tensor under two names)."""
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is None and isinstance(model, DistillationModel):
            skip = set(model._keys_to_ignore_on_save or ())
            state_dict = {k: v for k, v in self.model.state_dict().items() if k not in skip}
        super()._save(output_dir, state_dict)
        share_files(output_dir or self.args.output_dir)  # safetensors leaves weights at 0600

    def model_to_score(self) -> nn.Module:
        model = self.accelerator.unwrap_model(self.model)
        return model.student if isinstance(model, DistillationModel) else model

    def check_loss(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Stop on a non-finite loss (fp16 excepted: its gradient scaler skips such steps)."""
        if self.args.fp16 or bool(torch.isfinite(loss.detach()).all()):
            return
        detail = ", ".join(f"{name}={float(v):.4g}" for name, v in terms.items())
        raise TrainingDiverged(
            f"the loss became {float(loss.detach()):.4g} at step {self.state.global_step + 1}"
            + (f" ({detail})" if detail else "")
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if isinstance(self.accelerator.unwrap_model(model), DistillationModel):
            outputs = model(**inputs)
            loss = outputs["loss"]
        else:
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
        if model.training:
            self.check_loss(loss, getattr(self.accelerator.unwrap_model(model), "last_terms", {}))
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """The task's metrics on the evaluation examples, logged as ``eval_<metric>``."""

        model = self.model_to_score()
        was_training = model.training
        values = evaluate_model(
            model,
            self.task,
            self.eval_examples,
            self.processing_class,
            self.args.eval_batch_size,
            self.args.device,
            features=self.eval_features,
            pad_to=self.pad_to,
        )
        model.train(was_training)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in values.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics

    def held_out_objective(self) -> dict[str, float]:
        """The distillation objective's terms on the evaluation data (for tasks whose models
        make no predictions to score, e.g. a bare encoder distilled on raw text)."""
        model = self.accelerator.unwrap_model(self.model)
        assert isinstance(model, DistillationModel)
        features = self.task.tokenize(self.eval_examples, self.processing_class, "eval")
        loader = torch.utils.data.DataLoader(
            self.task.model_features(features),
            batch_size=self.args.eval_batch_size,
            collate_fn=self.task.collator(self.processing_class, "eval", self.pad_to),
        )
        was_training = model.training
        model.eval()
        sums: dict[str, float] = defaultdict(float)
        count = 0
        with torch.inference_mode():
            for batch in loader:
                batch = {k: v.to(self.args.device) for k, v in batch.items()}
                out = model(**batch)
                size = int(batch["input_ids"].shape[0])
                sums["loss"] += float(out["loss"]) * size
                for name, value in model.last_terms.items():
                    sums[f"loss/{name}"] += float(value) * size
                count += size
        model.train(was_training)
        return {name: total / max(1, count) for name, total in sums.items()}


class DistillationTrainer(TaskTrainer):
    """``TaskTrainer`` whose loss is the distillation objective; logs every term as
    ``loss/<name>``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_count = 0
        objective = getattr(self.model, "objective", None)
        if isinstance(objective, DistillationObjective):
            self.add_callback(ProgressCallback(objective))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            for name, value in self.accelerator.unwrap_model(model).last_terms.items():
                self._term_sums[name] += float(value)
            self._term_count += 1
        return result

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_count:
            for name, total in self._term_sums.items():
                logs[f"loss/{name}"] = round(total / self._term_count, 6)
            self._term_sums.clear()
            self._term_count = 0
        super().log(logs, start_time)


def training_arguments(
    train: TrainConfig,
    checkpoint_dir: Path,
    seed: int,
    evaluate_during_training: bool,
    label_names: list[str] | None = None,
) -> KDTrainingArguments:
    """Map kdformer's ``TrainConfig`` onto ``TrainingArguments``."""
    if train.mixed_precision == "fp16" and (train.use_cpu or not torch.cuda.is_available()):
        raise ConfigError(
            "mixed_precision: fp16 needs a CUDA GPU and none is in use; use bf16 or no"
        )
    steps_eval = evaluate_during_training and train.eval_steps is not None
    return KDTrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_fraction=train.warmup_ratio,
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
        # Without an accelerator, transformers runs each launched CPU process as a job of its
        # own (unsharded copies) unless told to use the CPU.
        use_cpu=train.use_cpu or not torch.accelerator.is_available(),
        remove_unused_columns=False,
        label_names=list(label_names or []),
        disable_tqdm=False,
        restore_callback_states_from_checkpoint=True,
    )


def build_trainer(
    trainer_class: type[TaskTrainer],
    model: nn.Module,
    train: TrainConfig,
    checkpoints: Path,
    seed: int,
    task: Any,
    tokenizer: Any,
    train_features: Any,
    collator: Any = None,
    callbacks: Sequence[Any] = (),
    evaluate: bool = True,
    pad_to: int | None = None,
) -> TaskTrainer:
    """The library's Trainer (a task-aware subclass) for one training run: the task scores the
    evaluation set (tokenised once) every ``train.eval_steps`` steps when ``evaluate``.
    ``pad_to``: the run's one batch length, for the task's collators (when its model family
    needs one)."""
    label_keys = list(task.label_keys) if task is not None else []
    args = training_arguments(train, checkpoints, seed, evaluate and task is not None, label_keys)
    args.include_num_input_tokens_seen = "all"
    if train.keep_best and evaluate and task is not None and task.main_metric:
        # Checked in TrainConfig: every scored step is saved, so the best one is on disk.
        args.load_best_model_at_end = True
        args.metric_for_best_model = f"eval_{task.main_metric}"
        args.greater_is_better = task.higher_is_better
    eval_examples = task.load("eval") if task is not None else None
    scored = evaluate and task is not None and train.eval_steps
    if scored and task.main_metric:
        curve = LearningCurve(
            task.main_metric, train.plateau_window, train.plateau_gain, train.stop_at_plateau,
            task.higher_is_better, after=train.plateau_after,
        )  # fmt: skip
        callbacks = [*callbacks, curve]
    return trainer_class(
        model=model,
        args=args,
        train_dataset=train_features,
        eval_dataset=eval_examples,
        data_collator=collator or task.collator(tokenizer, "train", pad_to),
        processing_class=tokenizer,
        callbacks=list(callbacks),
        task=task,
        eval_examples=eval_examples,
        eval_features=task.tokenize(eval_examples, tokenizer, "eval") if scored else None,
        pad_to=pad_to,
    )


def run_training(
    trainer: TaskTrainer, checkpoints: Path, resume: bool, train: TrainConfig, setting: str
) -> None:
    """Train, from the latest checkpoint in ``checkpoints`` when ``resume``. A diverged run
    raises :class:`TrainingDiverged` naming the last good checkpoint and what to change in the
    ``setting`` section."""
    last, skipped = None, []
    for folder in checkpoints_newest_first(checkpoints) if resume else []:
        problem = checkpoint_problem(folder)
        if problem is None:
            last = folder
            break
        skipped.append((folder, problem))
    for folder, problem in skipped:
        print(
            f"note: {folder} cannot be resumed from ({problem}); resuming "
            f"from {last.name if last else 'the start (no complete checkpoint)'}",
            file=sys.stderr,
        )
    if last is not None:
        check_checkpoint_fits(trainer.model, last)
    if trainer.args.device.type == "cpu":
        keep_freed_memory()
    try:
        trainer.train(resume_from_checkpoint=str(last) if last else None)
    except TrainingDiverged as exc:
        good = latest_checkpoint(checkpoints)
        kept = (
            f"The last good checkpoint is {good}, kept for inspection."
            if good
            else "No checkpoint had been written yet."
        )
        raise TrainingDiverged(
            f"training diverged: {exc}. Nothing was saved or scored. {kept} Lower "
            f"{setting}.learning_rate (now {train.learning_rate:g}), or check max_grad_norm, "
            "the data and the mixed-precision setting, then rerun with --overwrite (--resume "
            "would restore the optimiser state that diverged)."
        ) from None


def gathered_state_dict(trainer: Trainer, prefix: str = "") -> dict[str, torch.Tensor] | None:
    """The full weights under ``prefix`` (``student.`` for a DistillationModel), gathered onto
    the main process when training shards them (FSDP, DeepSpeed); None when the model in memory
    already holds them. A collective: every process must call it."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return None
    state = accelerator.get_state_dict(trainer.model)
    if not state:
        return None
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
"""A checkpoint's weights as the Trainer writes them (sharded runs write other layouts)."""


def checkpoint_problem(folder: Path) -> str | None:
    """Why a ``checkpoint-N`` folder cannot be resumed from (no trainer state, no weights,
    unreadable weights), or None when it can."""
    if not (folder / "trainer_state.json").is_file():
        return "it has no trainer_state.json"
    sharded = any(folder.glob("pytorch_model_fsdp*")) or any(folder.glob("global_step*"))
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not present and not sharded:
        return "its weights are missing"
    if "model.safetensors" in present:
        problem = safetensors_problem(folder / "model.safetensors")
        if problem is not None:
            return f"its weights are unreadable ({problem})"
    return None


def checkpoints_newest_first(checkpoint_dir: Path) -> list[Path]:
    found = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[-1].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder that can be resumed from, or None."""
    return next(
        (p for p in checkpoints_newest_first(checkpoint_dir) if checkpoint_problem(p) is None),
        None,
    )


def check_checkpoint_fits(model: nn.Module, checkpoint: Path) -> None:
    """ConfigError, before resuming, when a checkpoint's weights are not this model's (the
    config changed the student's shape since): resuming would fail deep in the optimiser."""
    weights = checkpoint / "model.safetensors"
    if not weights.is_file():
        return
    with safe_open(str(weights), framework="pt") as stored:
        shapes = {k: tuple(stored.get_slice(k).get_shape()) for k in stored.keys()}  # noqa: SIM118
    unwrapped = getattr(model, "module", model)
    skip = set(getattr(unwrapped, "_keys_to_ignore_on_save", None) or ())
    ours = {k: tuple(v.shape) for k, v in unwrapped.state_dict().items() if k not in skip}
    differ = [k for k in ours.keys() & shapes.keys() if ours[k] != shapes[k]]
    missing = sorted(ours.keys() - shapes.keys())
    if not differ and not missing:
        return
    detail = (
        f"{differ[0]} is {list(shapes[differ[0]])} there and {list(ours[differ[0]])} here"
        if differ
        else f"it lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
    )
    raise ConfigError(
        f"{checkpoint} belongs to another config: {detail} (the model's shape changed since "
        "it was written). Resume with the config it was made with, or start this config over "
        "with --overwrite (the checkpoints are replaced then)"
    )
