"""Benchmark: does kdformer's distillation pay off, and what does its machinery cost?

One run measures two things on the machine it runs on:

A. Quality, for SST-2 and MRPC. Three models per task, all through kdformer's own pipeline:

   1. ``teacher``: MiniLM-L6 fine-tuned on the task (``kdformer.pipeline.finetune``);
   2. ``kd student``: a 3-layer student initialised from teacher layers (uniform) and distilled
      with logits KL (T=2) + hidden-state MSE + 0.5 x hard labels (``kdformer.pipeline.distill``);
   3. ``no-KD student``: the SAME student (init, seed, steps, learning rate, data order) trained on
      the hard labels only, i.e. ``distill.knowledge: []`` and ``hard_label_weight: 1.0``. Using
      the same code path means the only difference between 2 and 3 is the loss, so the gap
      between them is what knowledge distillation adds over plain fine-tuning of the small model.

   All three are then measured side by side on the task's full dev set with
   ``kdformer.pipeline.measure_models`` (metrics, parameters, latency, speed-up).

B. Training cost: seconds per distillation step of kdformer (``DistillationTrainer`` built the way
   ``pipeline.distill`` builds it, timed with a ``TrainerCallback``) against a minimal hand-written
   PyTorch loop doing the same work on the same fixed-shape batches, in the same process,
   interleaved step by step, with warm-up steps excluded.

Run ``python benchmarks/bench_distill.py --out benchmarks/results`` on an otherwise idle machine;
``--smoke`` is a tiny end-to-end check that finishes in about two minutes.

Why the default sizes: on 2 idle CPU cores (torch 2.13) one optimiser step at batch 32 took about
0.69 s (teacher fine-tuning) / 0.48 s (either student) on SST-2 (batches pad to ~40 tokens) and
1.27 s / 0.91 s on MRPC (~80 tokens). Training time is therefore about
``N_sst2/32 * (2*0.69 + 3*0.97) + N_mrpc/32 * (2*1.27 + 3*1.83)`` seconds with 2 teacher and 3
student epochs, i.e. ~670 s for 2000 SST-2 and 1600 MRPC examples; measuring (~70 s), the cost
part (~75 s) and loading/saving (~30 s) bring the whole run to about 14 minutes. Larger sizes,
e.g. 4000 SST-2 and all 3667 MRPC examples, take about 26 minutes. Torch uses every
core, so any other busy process on the machine inflates all of these several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The benchmark is offline by design: the teacher and GLUE data are local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForSequenceClassification, TrainerCallback  # noqa: E402

import kdformer  # noqa: E402
from kdformer.config import ExperimentConfig, StudentConfig, TrainConfig  # noqa: E402
from kdformer.config.knowledge import HiddenConfig, LogitsConfig  # noqa: E402
from kdformer.features import extract_features  # noqa: E402
from kdformer.models import load_model  # noqa: E402
from kdformer.objective import DistillationObjective  # noqa: E402
from kdformer.pipeline import Paths, distill, finetune, measure_models  # noqa: E402
from kdformer.students import build_student  # noqa: E402
from kdformer.tasks.classification import ClassificationTask  # noqa: E402
from kdformer.teacher import LiveTeacher  # noqa: E402
from kdformer.training import (  # noqa: E402
    DistillationModel,
    DistillationTrainer,
    training_arguments,
)

TEACHER = "minilm-l6"
STUDENT_LAYERS = 3
TEMPERATURE = 2.0
KD_HARD_LABEL_WEIGHT = 0.5
#: Knowledge terms of the KD student, as in configs/demo.yaml.
KD_KNOWLEDGE = [
    {"type": "logits", "weight": 1.0, "temperature": TEMPERATURE},
    {"type": "hidden", "weight": 1.0, "loss": "mse"},
]
VARIANTS = ("teacher", "kd student", "no-KD student")
#: Full dev-set sizes, so the report can say whether the whole dev set was used.
DEV_SIZES = {"sst2": 872, "mrpc": 408}


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="kdformer distillation benchmark: quality (teacher / KD student / no-KD "
        "student on SST-2 and MRPC) and training cost (kdformer vs a hand-written loop).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for distill.json and distill.md",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/kdformer-bench"),
        help="scratch folder for fine-tuned and distilled models",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("../shared/data/glue"),
        help="GLUE root holding SST-2/ and MRPC/",
    )
    parser.add_argument("--tasks", default="sst2,mrpc", help="comma-separated tasks for part A")
    parser.add_argument("--parts", default="quality,cost", help="quality, cost or both")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny settings for an end-to-end check (a couple of minutes); writes "
        "distill_smoke.{json,md} and works in <work>/smoke",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep models already finished in --work instead of retraining them",
    )
    parser.add_argument("--seed", type=int, default=42, help="data subset, init and training")

    quality = parser.add_argument_group("part A: quality")
    quality.add_argument(
        "--sst2-train",
        type=int,
        default=2000,
        help="SST-2 training examples (seeded random subset of 67349; 0 for all)",
    )
    quality.add_argument("--sst2-max-length", type=int, default=64, help="tokens per example")
    quality.add_argument(
        "--mrpc-train",
        type=int,
        default=1600,
        help="MRPC training examples (seeded random subset; 0 for all 3667)",
    )
    quality.add_argument("--mrpc-max-length", type=int, default=128, help="tokens per pair")
    quality.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help="evaluate on the first N dev examples only (unset: the full dev set)",
    )
    quality.add_argument("--teacher-epochs", type=float, default=2.0, help="teacher fine-tuning")
    quality.add_argument("--student-epochs", type=float, default=3.0, help="both students")
    quality.add_argument("--batch-size", type=int, default=32, help="training batch size")
    quality.add_argument("--teacher-lr", type=float, default=5e-5, help="teacher peak LR")
    quality.add_argument("--student-lr", type=float, default=1e-4, help="students peak LR")
    quality.add_argument("--latency-repeats", type=int, default=20, help="timed forward passes")

    cost = parser.add_argument_group("part B: training cost")
    cost.add_argument("--steps", type=int, default=40, help="timed steps per loop")
    cost.add_argument("--warmup", type=int, default=3, help="untimed first steps per loop")
    cost.add_argument("--cost-batch", type=int, default=32, help="examples per step")
    cost.add_argument("--cost-length", type=int, default=64, help="tokens per example")

    args = parser.parse_args(argv)
    if args.smoke:
        apply_smoke(args, parser)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = [t for t in args.tasks if t not in DEV_SIZES] + sorted(
        args.parts - {"quality", "cost"}
    )
    if unknown:
        parser.error(f"unknown task(s)/part(s): {unknown}")
    return args


def apply_smoke(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Shrink every size that the user left at its default, so --smoke still honours overrides."""
    smoke = {
        "sst2_train": 64,
        "mrpc_train": 64,
        "eval_limit": 64,
        "teacher_epochs": 1.0,
        "student_epochs": 1.0,
        "latency_repeats": 3,
        "steps": 5,
        "warmup": 1,
    }
    for name, value in smoke.items():
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)
    args.work = args.work / "smoke"


# ------------------------------------------------------------------------------------------
# Timing helpers
# ------------------------------------------------------------------------------------------


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step as the Trainer runs it, optionally interleaved with
    another training loop's steps.

    on_step_begin -> on_step_end spans forward, backward, clipping, optimizer and scheduler step,
    and zero_grad; ``between`` is the Trainer's time outside that span (fetching and collating
    the next batch, logging, saving). With ``other`` (a function running one step of another loop
    and returning its seconds), one such step runs next to each Trainer step, before it on even
    steps and after it on odd ones (A B B A ...), outside the timed span: both loops then see the
    same machine state, which matters on a shared CPU whose load drifts within seconds.
    """

    def __init__(self, other: Callable[[], float] | None = None) -> None:
        self.durations: list[float] = []
        self.between: list[float] = []
        self.other_durations: list[float] = []
        self.logs: list[dict[str, float]] = []
        self._other = other
        self._begin = 0.0
        self._returned: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._returned is not None:
            self.between.append(time.perf_counter() - self._returned)
        if self._other is not None and state.global_step % 2 == 0:
            self.other_durations.append(self._other())
        self._begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._begin)
        if self._other is not None and state.global_step % 2 == 0:  # step index global_step - 1
            self.other_durations.append(self._other())
        self._returned = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.logs.append({"step": state.global_step, **logs})


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def load_average() -> list[float] | None:
    """1/5/15-minute load: a busy shared CPU shows here and distorts every timing."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def warn_if_busy(load: list[float] | None) -> None:
    """Torch uses every core, so a second busy process slows each step several-fold: say so."""
    if load and load[0] > 0.5:
        print(
            f"WARNING: load average {load} before starting: other processes are using the CPU, "
            "so training times and latencies will be inflated and noisy.",
            file=sys.stderr,
            flush=True,
        )


def machine_info() -> dict[str, Any]:
    cpu_model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "kdformer": getattr(kdformer, "__version__", None),
    }


# ------------------------------------------------------------------------------------------
# Part A: quality
# ------------------------------------------------------------------------------------------


def task_settings(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """The ``task:`` section for one task, with the training subset and sequence length."""
    train = args.sst2_train if task == "sst2" else args.mrpc_train
    return {  # max_train_samples None (from --*-train 0) means the whole training file
        "name": task,
        "data_dir": str(args.data_dir),
        "max_train_samples": train or None,
        "max_length": args.sst2_max_length if task == "sst2" else args.mrpc_max_length,
        "max_eval_samples": args.eval_limit,
    }


def train_settings(args: argparse.Namespace, epochs: float, lr: float) -> dict[str, Any]:
    """Training section: no loggers and no intermediate checkpoints, which would add I/O time."""
    return {
        "epochs": epochs,
        "batch_size": args.batch_size,
        "learning_rate": lr,
        "logging_steps": 25,
        "save_steps": 1_000_000,
        "save_total_limit": 1,
        "report_to": [],
    }


def variant_configs(args: argparse.Namespace, task: str, root: Path) -> dict[str, ExperimentConfig]:
    """One ExperimentConfig per variant, each with its own output_dir under ``root``.

    The two students name the fine-tuned teacher folder as their teacher (and have no
    ``finetune:`` section), so they both start from the very same teacher weights. They differ
    only in ``distill.knowledge`` and ``distill.hard_label_weight``.
    """
    report = {
        "latency_batch_size": 32,
        "latency_seq_length": task_settings(args, task)["max_length"],
        "latency_repeats": args.latency_repeats,
    }
    teacher_cfg = ExperimentConfig.model_validate(
        {
            "output_dir": str(root / "teacher"),
            "seed": args.seed,
            "task": task_settings(args, task),
            "teacher": {"name": TEACHER},
            "finetune": train_settings(args, args.teacher_epochs, args.teacher_lr),
            "report": report,
        }
    )
    teacher_dir = Paths(teacher_cfg.output_dir).teacher

    def student(name: str, knowledge: list[dict[str, Any]], hard_label_weight: float):
        return ExperimentConfig.model_validate(
            {
                "output_dir": str(root / name),
                "seed": args.seed,
                "task": task_settings(args, task),
                "teacher": {"name": str(teacher_dir)},
                "student": {
                    "num_layers": STUDENT_LAYERS,
                    "init": "teacher",
                    "init_layers": "uniform",
                },
                "distill": {
                    "knowledge": knowledge,
                    "hard_label_weight": hard_label_weight,
                    "train": train_settings(args, args.student_epochs, args.student_lr),
                    # Measure, don't stop: a weak teacher (MRPC at this budget) is reported as
                    # such, with retention marked meaningless, rather than refused.
                    "allow_weak_teacher": True,
                },
                "report": report,
            }
        )

    return {
        "teacher": teacher_cfg,
        "kd student": student("kd", KD_KNOWLEDGE, KD_HARD_LABEL_WEIGHT),
        "no-KD student": student("nokd", [], 1.0),
    }


def train_variant(name: str, config: ExperimentConfig, reuse: bool) -> tuple[Path, dict[str, Any]]:
    """Train one variant through the pipeline; return its model folder and training figures."""
    timer = StepTimer()
    stage = finetune if name == "teacher" else distill
    start = time.perf_counter()
    model_dir = stage(config, overwrite=not reuse, callbacks=[timer])
    seconds = time.perf_counter() - start
    losses = [log["loss"] for log in timer.logs if "loss" in log]
    summary = [log for log in timer.logs if "train_runtime" in log]
    return model_dir, {
        "model_dir": str(model_dir),
        "reused": not timer.durations,
        "steps": len(timer.durations),
        "seconds": round(seconds, 1),
        "median_step_s": median_or_none(timer.durations),
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "train_loss": summary[0].get("train_loss") if summary else None,
        "load_average_after": load_average(),
    }


def retention(report: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """% of the teacher for every metric (the pipeline's report only does the main metric)."""
    reference = next(row for row in report["models"] if row["name"] == report["reference"])
    out = {}
    for row in report["models"]:
        out[row["name"]] = {
            metric: (100 * value / reference["metrics"][metric])
            if reference["metrics"].get(metric)
            else None
            for metric, value in row["metrics"].items()
        }
    return out


def run_quality(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """Fine-tune the teacher, train both students, measure all three side by side."""
    root = args.work / task
    configs = variant_configs(args, task, root)
    dirs: dict[str, Path] = {}
    training: dict[str, Any] = {}
    for name in VARIANTS:
        print(f"\n=== {task}: {name} ===", flush=True)
        dirs[name], training[name] = train_variant(name, configs[name], args.reuse)
        print(f"{task} {name}: {training[name]}", flush=True)
    teacher_cfg = configs["teacher"]
    start = time.perf_counter()
    report = measure_models(
        [(name, dirs[name]) for name in VARIANTS],
        teacher_cfg.task,
        teacher_cfg.report,
        seed=args.seed,
    )
    return {
        "task": task,
        "settings": {
            "task": teacher_cfg.task.model_dump(mode="json"),
            "teacher_finetune": teacher_cfg.finetune.model_dump(mode="json"),
            "distill": configs["kd student"].distill.model_dump(mode="json"),
            "no_kd_distill": configs["no-KD student"].distill.model_dump(mode="json"),
            "student": configs["kd student"].student.model_dump(mode="json"),
        },
        "full_dev_set": report["eval_examples"] == DEV_SIZES[task],
        "training": training,
        "report": report,
        "retention_pct": retention(report),
        "measure_seconds": round(time.perf_counter() - start, 1),
    }


# ------------------------------------------------------------------------------------------
# Part B: training cost
# ------------------------------------------------------------------------------------------


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


def distillation_trainer(teacher, batches, args, folder: Path, callback) -> DistillationTrainer:
    """kdformer's side: DistillationModel + DistillationTrainer built as pipeline.distill does."""
    student = new_student(teacher, args.seed)
    objective = kd_objective(teacher, student)
    model = DistillationModel(student, objective, LiveTeacher(teacher, objective.needs))
    return DistillationTrainer(
        model=model,
        args=training_arguments(cost_train_config(args), folder, args.seed, False),
        train_dataset=as_examples(batches),
        data_collator=transformers.default_data_collator,
        callbacks=[callback],
    )


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
        kd = objective(
            extract_features(student, inputs, objective.needs),
            LiveTeacher(teacher, objective.needs)(inputs),
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
    """Time kdformer's Trainer and the hand-written loop step by step, interleaved."""
    torch.manual_seed(args.seed)  # the fresh classification head, so the loss check repeats
    teacher = load_model(TEACHER, AutoModelForSequenceClassification, num_labels=2)
    total = args.warmup + args.steps
    batches = fixed_batches(
        teacher.config.vocab_size, args.cost_batch, args.cost_length, total, args.seed
    )
    loss_check = check_same_loss(teacher, batches[0], args.seed)
    folder = args.work / "cost"
    train_args = training_arguments(cost_train_config(args), folder, args.seed, False)
    handwritten = HandwrittenLoop(teacher, batches, args.seed, train_args)
    timer = StepTimer(other=handwritten.step)
    print(f"cost: {total} kdformer steps interleaved with {total} hand-written steps", flush=True)
    distillation_trainer(teacher, batches, args, folder, timer).train()
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


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def _f(value: Any, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def quality_table(result: dict[str, Any]) -> list[str]:
    report = result["report"]
    metrics = list(report["models"][0]["metrics"])
    main = report["main_metric"]
    header = ["model", "layers", *metrics, *(f"% teacher {m}" for m in metrics),
              f"% teacher gain ({main})", "params M", "ms/batch", "speed-up", "train steps",
              "train s"]  # fmt: skip
    lines = [
        f"## {result['task'].upper()}",
        "",
        f"{report['eval_examples']} dev examples"
        + (" (full dev set)" if result["full_dev_set"] else " (SUBSET of the dev set)")
        + f"; {result['settings']['task']['max_train_samples'] or 'all'} training examples, "
        f"max_length {result['settings']['task']['max_length']}; main metric "
        f"**{report['main_metric']}**.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in report["models"]:
        name = row["name"]
        train = result["training"][name]
        keep = result["retention_pct"][name]
        cells = [
            name,
            str(row["shape"]["layers"]),
            *(_f(100 * row["metrics"][m]) for m in metrics),
            *(_f(keep[m], ".1f", "%") for m in metrics),
            _f(row.get("gain_kept_pct"), ".1f", "%"),
            _f(row["parameters"] / 1e6, ".1f"),
            _f(row["latency_ms"], ".1f"),
            _f(row["speedup"], ".2f", "x"),
            str(train["steps"]) + (" (reused)" if train["reused"] else ""),
            _f(train["seconds"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    floor = (report.get("baseline") or {}).get("metrics")
    if floor:
        cells = [
            "majority class",
            "-",
            *(_f(100 * floor[m]) if m in floor else "-" for m in metrics),
        ]
        lines.append("| " + " | ".join(cells + ["-"] * (len(header) - len(cells))) + " |")
    setup = report["latency_setup"]
    lines += [
        "",
        f"Latency: median of {setup['repeats']} forward passes of a {setup['batch_size']} x "
        f"{setup['seq_length']} batch on {setup['device']}, models timed round-robin. "
        "Both students: same init, seed, data order, steps and learning rate; the no-KD student "
        "is trained on hard labels only (`knowledge: []`, `hard_label_weight: 1.0`). % teacher "
        "gain: the share of the teacher's improvement over the majority class (always "
        "predicting the most frequent training label) that a model keeps.",
        "",
    ]
    return lines


def cost_table(cost: dict[str, Any]) -> list[str]:
    setup = cost["setup"]
    lines = [
        "## Training cost per distillation step",
        "",
        f"{setup['batch_size']} x {setup['seq_length']} fixed-shape batches on {setup['device']}; "
        f"{setup['warmup_steps']} warm-up + {setup['timed_steps']} timed steps per side, the two "
        "loops interleaved step by step (A B B A ...) in one process. Loss: "
        f"{setup['loss']}.",
        "",
        "| loop | median s/step | p10 | p90 | timed steps |",
        "|---|---|---|---|---|",
    ]
    rows = [
        ("kdformer: DistillationTrainer step (forward to zero_grad)", cost["kdformer"]),
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


def to_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# kdformer distillation benchmark" + (" (SMOKE settings)" if result["smoke"] else ""),
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable, "
        f"{machine['cpu_model']}), {machine['torch_threads']} torch threads, "
        f"torch {machine['torch']}, transformers {machine['transformers']}"
        + (f", GPU {machine['cuda']}" if machine["cuda"] else "")
        + f". Load average at start {result['load_average_start']}, at end "
        f"{result['load_average_end']}. Total {result['total_seconds'] / 60:.1f} min.",
        "",
        f"Teacher: {TEACHER} fine-tuned per task. KD student: {STUDENT_LAYERS} layers from "
        f"teacher layers (uniform), logits KL T={TEMPERATURE} + hidden MSE + "
        f"{KD_HARD_LABEL_WEIGHT} x hard labels.",
        "",
    ]
    for task_result in result["quality"].values():
        lines += quality_table(task_result)
    if result.get("cost"):
        lines += cost_table(result["cost"])
    return "\n".join(lines)


def write_results(result: dict[str, Any], out: Path, smoke: bool) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = "distill_smoke" if smoke else "distill"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(result) + "\n", encoding="utf-8")
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    result: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/bench_distill.py", *sys.argv[1:]]),
        "smoke": args.smoke,
        "machine": machine_info(),
        "load_average_start": load_average(),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "quality": {},
        "cost": None,
    }
    result["arguments"]["parts"] = sorted(args.parts)
    warn_if_busy(result["load_average_start"])
    if "quality" in args.parts:
        for task in args.tasks:
            result["quality"][task] = run_quality(args, task)
    if "cost" in args.parts:
        result["cost"] = run_cost(args)
    result["load_average_end"] = load_average()
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    json_path, md_path = write_results(result, args.out, args.smoke)
    print("\n" + to_markdown(result))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
