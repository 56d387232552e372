"""Part B of the distillation benchmark, training cost: seconds per distillation step of
kdformer's public :class:`~kdformer.distiller.Distiller` (built as ``pipeline.distill`` builds
it, timed with a ``TrainerCallback``) against a minimal hand-written PyTorch loop doing the same
work on the same fixed-shape batches, in the same process, interleaved step by step, with
warm-up steps excluded. Run through ``bench_distill.py --parts cost``."""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from distill_common import KD_HARD_LABEL_WEIGHT, STUDENT_LAYERS, TEACHER, TEMPERATURE, StepTimer
from transformers import AutoModelForSequenceClassification

from kdformer.config import StudentConfig, TrainConfig
from kdformer.config.knowledge import HiddenConfig, LogitsConfig
from kdformer.distiller import Distiller, teacher_signal_of
from kdformer.features import extract_features
from kdformer.models import load_model, load_tokenizer
from kdformer.objective import DistillationObjective
from kdformer.students import build_student
from kdformer.tasks.classification import ClassificationTask


def fixed_batches(vocab_size: int, batch: int, length: int, count: int, seed: int) -> list[dict]:
    """``count`` identical-shape batches (random real-vocabulary ids, no padding, random labels):
    every step does exactly the same amount of work, on both sides."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        input_ids = torch.randint(1000, vocab_size, (batch, length), generator=generator)
        batches.append(
            {
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "token_type_ids": torch.zeros_like(input_ids),
                "labels": torch.randint(0, 2, (batch,), generator=generator),
            }
        )
    return batches


def as_examples(batches: list[dict]) -> list[dict]:
    """The same batches as a list of examples, for the Trainer's data loader."""
    return [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["labels"]))]


def kd_objective(teacher: Any, student: Any) -> DistillationObjective:
    knowledge = [LogitsConfig(temperature=TEMPERATURE), HiddenConfig(loss="mse")]
    return DistillationObjective(
        knowledge, teacher.config, student.config, ClassificationTask.outputs, KD_HARD_LABEL_WEIGHT
    )


def new_student(teacher: Any, seed: int) -> Any:
    """The same 3-layer, teacher-initialised student for every block (as pipeline.distill)."""
    config = StudentConfig(num_layers=STUDENT_LAYERS, init="teacher", init_layers="uniform")
    return build_student(teacher, config, AutoModelForSequenceClassification, seed)


def cost_train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        max_steps=args.warmup + args.steps,
        batch_size=args.cost_batch,
        learning_rate=args.student_lr,
        logging_steps=1_000_000,
        save_steps=1_000_000,
        report_to=[],
    )


def kdformer_distiller(
    teacher: Any, batches: list[dict], args: argparse.Namespace, folder: Path, callback: StepTimer
) -> Distiller:
    """kdformer's side, as users get it: the public :class:`Distiller`, built as
    ``pipeline.distill`` builds it (teacher-initialised student, the objective, the live teacher
    it wraps itself, the training settings, checkpoints in ``folder``), on the fixed batches.
    No task: the batches are already tokenised and there is nothing to score between steps."""
    student = new_student(teacher, args.seed)
    return Distiller(
        student, teacher, kd_objective(teacher, student), None, load_tokenizer(TEACHER),
        cost_train_config(args), folder, train_features=as_examples(batches),
        collator=transformers.default_data_collator, callbacks=[callback], seed=args.seed,
    )  # fmt: skip


def handwritten_loss(student_out: Any, teacher_out: Any, labels, mask, pairs) -> torch.Tensor:
    """KL(T=2)*T^2 on logits + mean masked MSE over the layer pairs + 0.5 * cross-entropy."""
    t = TEMPERATURE
    teacher_logp = F.log_softmax(teacher_out.logits / t, dim=-1)
    student_logp = F.log_softmax(student_out.logits / t, dim=-1)
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1).mean() * t * t
    m = mask.to(student_out.logits.dtype).unsqueeze(-1)
    mses = []
    for s, tl in pairs:
        diff = (student_out.hidden_states[s] - teacher_out.hidden_states[tl]).pow(2) * m
        mses.append(diff.sum() / (m.sum().clamp_min(1) * diff.shape[-1]))
    hidden = torch.stack(mses).mean()
    ce = F.cross_entropy(student_out.logits, labels)
    return kl + hidden + KD_HARD_LABEL_WEIGHT * ce


def layer_pairs(teacher: Any, student: Any) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state indices, TinyBERT uniform: 6 -> 3 gives (1,2),(2,4),(3,6)."""
    n_t, n_s = teacher.config.num_hidden_layers, student.config.num_hidden_layers
    return [(s, s * n_t // n_s) for s in range(1, n_s + 1)]


def optimizer_name(train_args: Any) -> str:
    return str(getattr(train_args.optim, "value", train_args.optim))


def handwritten_optimizer(student: Any, train_args: Any) -> tuple[Any, Any]:
    """The optimiser and schedule the Trainer builds by default, written out by hand: AdamW
    (fused when the Trainer's ``optim`` is adamw_torch_fused, its default), no weight decay on
    biases and LayerNorm, linear decay after a linear warm-up."""
    no_decay = ("bias", "LayerNorm", "layernorm", "norm.")
    named = list(student.named_parameters())
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in no_decay)],
         "weight_decay": train_args.weight_decay},
        {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]  # fmt: skip
    optimizer = torch.optim.AdamW(
        groups,
        lr=train_args.learning_rate,
        betas=(train_args.adam_beta1, train_args.adam_beta2),
        eps=train_args.adam_epsilon,
        fused=optimizer_name(train_args) == "adamw_torch_fused",
    )
    total = train_args.max_steps
    warmup = train_args.get_warmup_steps(total)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class HandwrittenLoop:
    """The reference: a plain PyTorch loop doing the same forward / backward / clip / AdamW /
    scheduler work as the Trainer, one step per call, on the same batches in turn."""

    def __init__(self, teacher: Any, batches: list[dict], seed: int, train_args: Any):
        self.device = train_args.device
        self.teacher = teacher.to(self.device).eval()
        self.student = new_student(teacher, seed).to(self.device).train()
        self.pairs = layer_pairs(self.teacher, self.student)
        self.optimizer, self.scheduler = handwritten_optimizer(self.student, train_args)
        self.max_grad_norm = train_args.max_grad_norm
        self.batches = [{k: v.to(self.device) for k, v in b.items()} for b in batches]
        self.steps = 0

    def step(self) -> float:
        batch = dict(self.batches[self.steps % len(self.batches)])
        self.steps += 1
        labels = batch.pop("labels")
        start = time.perf_counter()
        with torch.no_grad():
            teacher_out = self.teacher(**batch, output_hidden_states=True)
        student_out = self.student(**batch, output_hidden_states=True)
        loss = handwritten_loss(
            student_out, teacher_out, labels, batch["attention_mask"], self.pairs
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def check_same_loss(teacher: Any, batch: dict, seed: int) -> dict[str, float]:
    """Both sides must compute the same number, or the timing compares different work."""
    student = new_student(teacher, seed).eval()
    objective = kd_objective(teacher, student)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        kd = objective(  # the teacher side as the Distiller wraps it
            extract_features(student, inputs, objective.needs),
            teacher_signal_of(teacher, objective)(inputs),
            batch,
        ).loss
        hand = handwritten_loss(
            student(**inputs, output_hidden_states=True),
            teacher(**inputs, output_hidden_states=True),
            batch["labels"],
            batch["attention_mask"],
            layer_pairs(teacher, student),
        )
    return {"kdformer": float(kd), "handwritten": float(hand), "abs_diff": abs(float(kd - hand))}


def summarize(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "median_s": statistics.median(ordered),
        "p10_s": ordered[int(0.1 * (len(ordered) - 1))],
        "p90_s": ordered[int(round(0.9 * (len(ordered) - 1)))],
        "steps": len(ordered),
    }


def run_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Time kdformer's Distiller and the hand-written loop step by step, interleaved."""
    torch.manual_seed(args.seed)  # the fresh classification head, so the loss check repeats
    teacher = load_model(TEACHER, AutoModelForSequenceClassification, num_labels=2)
    total = args.warmup + args.steps
    batches = fixed_batches(
        teacher.config.vocab_size, args.cost_batch, args.cost_length, total, args.seed
    )
    loss_check = check_same_loss(teacher, batches[0], args.seed)
    folder = args.work / "cost"
    timer = StepTimer()
    distiller = kdformer_distiller(teacher, batches, args, folder, timer)
    train_args = distiller.trainer.args  # the hand-written loop copies its optimiser settings
    handwritten = HandwrittenLoop(teacher, batches, args.seed, train_args)
    timer.other = handwritten.step
    print(f"cost: {total} kdformer steps interleaved with {total} hand-written steps", flush=True)
    distiller.train()
    shutil.rmtree(folder, ignore_errors=True)
    kd_steps, hand_steps = timer.durations[args.warmup :], timer.other_durations[args.warmup :]
    paired = [k / h for k, h in zip(kd_steps, hand_steps)]
    kd, hand = summarize(kd_steps), summarize(hand_steps)
    return {
        "setup": {
            "batch_size": args.cost_batch,
            "seq_length": args.cost_length,
            "timed_steps": args.steps,
            "warmup_steps": args.warmup,
            "device": str(train_args.device),
            "teacher": f"{TEACHER} ({teacher.config.num_hidden_layers} layers, fresh 2-label head)",
            "student": f"{STUDENT_LAYERS} layers, teacher-initialised (uniform)",
            "kdformer_side": "kdformer.distiller.Distiller(...).train(), as pipeline.distill "
            "builds it (live teacher, no task, default collator)",
            # Distiller.train() turns keep_freed_memory on for CPU training; it is process-wide,
            # so the interleaved hand-written steps run with it too.
            "keep_freed_memory": train_args.device.type == "cpu",
            "loss": f"KL T={TEMPERATURE} + hidden MSE on (student, teacher) layers "
            f"{handwritten.pairs} + {KD_HARD_LABEL_WEIGHT} x CE; grad clip "
            f"{train_args.max_grad_norm}; {optimizer_name(train_args)} (no decay on "
            "bias/LayerNorm); linear LR with warm-up",
        },
        "loss_check": loss_check,
        "kdformer": kd,
        "kdformer_between_steps": summarize(timer.between[args.warmup :]),
        "handwritten": hand,
        "ratio_kdformer_over_handwritten": kd["median_s"] / hand["median_s"],
        "paired_ratio_median": statistics.median(paired),
        "samples": {"kdformer_s": kd_steps, "handwritten_s": hand_steps},
    }


def cost_table(cost: dict[str, Any]) -> list[str]:
    setup = cost["setup"]
    lines = [
        "## Training cost per distillation step",
        "",
        f"{setup['batch_size']} x {setup['seq_length']} fixed-shape batches on {setup['device']}; "
        f"{setup['warmup_steps']} warm-up + {setup['timed_steps']} timed steps per side, the two "
        "loops interleaved step by step (A B B A ...) in one process"
        + (
            ", both with `keep_freed_memory` (which `Distiller.train()` turns on for CPU)"
            if setup.get("keep_freed_memory")
            else ""
        )
        + f". Loss: {setup['loss']}.",
        "",
        "| loop | median s/step | p10 | p90 | timed steps |",
        "|---|---|---|---|---|",
    ]
    rows = [
        ("kdformer: Distiller step (forward to zero_grad)", cost["kdformer"]),
        ("hand-written PyTorch step (same work)", cost["handwritten"]),
        ("kdformer: Trainer time between steps (batch loading, logging)",
         cost["kdformer_between_steps"]),
    ]  # fmt: skip
    for name, s in rows:
        lines.append(
            f"| {name} | {s['median_s']:.3f} | {s['p10_s']:.3f} | {s['p90_s']:.3f} | {s['steps']} |"
        )
    check = cost["loss_check"]
    lines += [
        "",
        f"**kdformer / hand-written: {cost['ratio_kdformer_over_handwritten']:.3f}x** (ratio of "
        f"median step times; median of per-step paired ratios {cost['paired_ratio_median']:.3f}). "
        f"Same-loss check on one batch: kdformer {check['kdformer']:.6f} vs hand-written "
        f"{check['handwritten']:.6f}.",
        "",
    ]
    return lines
