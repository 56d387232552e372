"""Part A of the distillation benchmark, quality: per task, a fine-tuned teacher, a KD student
and a no-KD student of the same shape, trained through kdformer's pipeline and measured side by
side on the task's dev set. Run through ``bench_distill.py --parts quality``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from distill_common import (
    KD_HARD_LABEL_WEIGHT,
    KD_KNOWLEDGE,
    STUDENT_LAYERS,
    TEACHER,
    StepTimer,
    median_or_none,
)
from machine import load_average

from kdformer.config import ExperimentConfig
from kdformer.pipeline import Paths, distill, finetune, measure_models

VARIANTS = ("teacher", "kd student", "no-KD student")
#: Full dev-set sizes, so the report can say whether the whole dev set was used.
DEV_SIZES = {"sst2": 872, "mrpc": 408}


def _f(value: Any, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


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
