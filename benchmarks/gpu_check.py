"""The GPU check: what kdformer does on one accelerator, in one command (``make gpu-check``).

Three parts, each timed and recorded with the device's name next to the CPU results:

1. ``demo``: the README's demo (configs/demo.yaml: fine-tune MiniLM-L6 on SST-2, distill a
   3-layer student, evaluate on the full dev set) with bf16 mixed precision.
2. ``review``: the performance review at whole-document length (configs/review/gpu.yaml):
   LitBank documents in one 4,096-token window, five attentions, teachers fine-tuned until
   their dev F1 plateaus, half-depth students, timing and memory at 512-4,096 tokens.
3. ``zero2``: DeepSpeed ZeRO-2 in one process (``accelerate launch`` with
   configs/accelerate/deepspeed_zero2.yaml, one process), a short distillation of the demo.
   Needs CUDA and the ``deepspeed`` package; recorded as skipped, with the reason, otherwise.

``--smoke`` runs the same code paths on tiny budgets (a few steps, short lengths, sample
limits): CI runs it on the CPU (tests/test_gpu_check.py), so the script cannot rot between
GPU runs. Writes ``gpu_check.json`` / ``gpu_check.md`` (``gpu_check_smoke.*`` with --smoke).

    python benchmarks/gpu_check.py --data-dir ../shared/data --out benchmarks/results
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, machine_line

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("demo", "review", "zero2")

SMOKE_RUN = [
    "task.max_train_samples=32",
    "task.max_eval_samples=32",
    "finetune.max_steps=2",
    "finetune.eval_steps=1",
    "distill.train.max_steps=2",
    "distill.allow_weak_teacher=true",
    "report.memory=false",
    "report.latency_repeats=1",
    "report.latency_warmup=0",
]
"""What --smoke changes in the demo: a few steps on a slice, no memory probe."""


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def timed(part: str, work) -> dict[str, Any]:
    """Run one part; its record with wall seconds, or the error that stopped it."""
    start = time.perf_counter()
    try:
        record = work()
    except Exception as exc:  # noqa: BLE001 - the other parts still run; the record says why
        record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    record.setdefault("status", "ok")
    record["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"[gpu-check] {part}: {record['status']} in {record['wall_s']} s", flush=True)
    return record


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    metric = report["main_metric"]
    return [
        {
            "name": m["name"],
            metric: m["metrics"].get(metric),
            "retention_pct": m.get("retention_pct"),
            "latency_ms": m.get("latency_ms"),
        }
        for m in report["models"]
    ]


def run_demo(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from kdformer import pipeline
    from kdformer.config import load_config

    overrides = [
        f"output_dir={work / 'demo'}",
        f"task.data_dir={args.data_dir / 'glue'}",
        "finetune.mixed_precision=bf16",
        "distill.train.mixed_precision=bf16",
        *(SMOKE_RUN + ["export=false"] if args.smoke else []),
    ]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    report = pipeline.run(config, resume=True)
    assert report is not None
    teacher_record = json.loads((work / "demo" / "teacher" / "training.json").read_text())
    return {
        "mixed_precision": "bf16",
        "main_metric": report["main_metric"],
        "models": report_rows(report),
        "teacher_train_seconds": teacher_record.get("train_seconds"),
    }


def run_review_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from kdformer.config.review import load_review
    from kdformer.review import run_review

    review, folder = load_review(ROOT / "configs" / "review" / "gpu.yaml")
    overrides = [f"task.data_dir={args.data_dir / 'litbank' / 'entities'}"]
    update: dict[str, Any] = {"runs_dir": work / "review", "output_dir": args.review_out}
    if args.smoke:  # two short lengths, a few steps, a few documents
        overrides += [
            "task.max_length=128", "task.stride=32", "task.max_train_samples=4",
            "task.max_eval_samples=2", "finetune.max_steps=4", "finetune.eval_steps=2",
            "finetune.save_steps=2", "distill.train.max_steps=2", "distill.train.eval_steps=2",
            "distill.allow_weak_teacher=true", "report.latency_seq_length=128",
        ]  # fmt: skip
        architectures = []
        for arch in review.architectures:
            convert = arch.convert.model_copy(update={"max_length": 128})
            if convert.to == "nystromformer":
                convert = convert.model_copy(update={"segment_length": 128, "num_landmarks": 16})
            if convert.to == "bigbird":
                convert = convert.model_copy(update={"block_size": 8, "num_random_blocks": 1})
            if convert.to == "longformer":
                convert = convert.model_copy(update={"window": 32})
            if convert.to == "local_global":
                convert = convert.model_copy(update={"block_size": 32})
            architectures.append(arch.model_copy(update={"convert": convert}))
        update |= {"lengths": [64, 128], "latency_repeats": 1, "memory": False,
                   "architectures": architectures}  # fmt: skip
    review = review.model_copy(update={**update, "overrides": [*review.overrides, *overrides]})
    result = run_review(review, folder, resume=True)
    return {
        "tables": str(Path(args.review_out) / "review.md"),
        "cells": [
            {
                key: cell.get(key)
                for key in (
                    "architecture",
                    "teacher_metric",
                    "student_metric",
                    "retention_pct",
                    "teacher_latency_ms",
                    "student_latency_ms",
                    "teacher_training",
                )
            }  # fmt: skip
            for cell in result["cells"]
        ],
    }


def zero2_launch_config(folder: Path) -> Path:
    """configs/accelerate/deepspeed_zero2.yaml with one process (the check runs on one GPU)."""
    text = (ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml").read_text()
    path = folder / "zero2_one_process.yaml"
    path.write_text(text.replace("num_processes: 2", "num_processes: 1"))
    return path


def run_zero2(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"status": "skipped", "reason": "no CUDA device (DeepSpeed ZeRO needs one)"}
    if importlib.util.find_spec("deepspeed") is None:
        return {"status": "skipped", "reason": "deepspeed is not installed (pip install deepspeed)"}
    teacher = work / "demo" / "teacher"
    if not (teacher / "config.json").is_file():
        return {"status": "skipped", "reason": "needs the demo part's fine-tuned teacher"}
    out = work / "zero2"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(zero2_launch_config(work)), "-m", "kdformer.cli", "distill",
        str(ROOT / "configs" / "demo.yaml"), f"output_dir={out}",
        f"task.data_dir={args.data_dir / 'glue'}", f"teacher.name={teacher}",
        "distill.train.mixed_precision=bf16", "distill.train.max_steps=50",
        "distill.cache=false", "--overwrite",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"status": "failed", "error": done.stderr[-2000:]}
    record = json.loads((out / "student" / "training.json").read_text())
    return {"steps": record["steps"], "train_seconds": record["train_seconds"]}


def render(result: dict[str, Any]) -> str:
    lines = [
        f"# GPU check{' (smoke)' if result['smoke'] else ''}",
        "",
        f"Command: `{result['command']}`. Device: **{result['device']}**.",
        "",
        f"Machine: {machine_line(result['machine'])}.",
        "",
        "| part | status | wall s | what |",
        "|---|---|---|---|",
    ]
    for part, record in result["parts"].items():
        if record["status"] != "ok":
            what = record.get("reason") or record.get("error", "")
        elif part == "demo":
            what = "; ".join(
                f"{m['name']} {m[record['main_metric']]:.4f}" for m in record["models"]
                if m.get(record["main_metric"]) is not None
            )  # fmt: skip
        elif part == "review":
            what = f"tables: {record['tables']}"
        else:
            what = f"{record['steps']} steps in {record['train_seconds']:.1f} s"
        lines.append(f"| {part} | {record['status']} | {record['wall_s']} | {what} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-check")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="Comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument("--smoke", action="store_true", help="Tiny budgets (CI on the CPU).")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if not (args.data_dir / "glue").is_dir():
        parser.error(f"no glue/ under --data-dir {args.data_dir}: point it at the data root")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    stem = "gpu_check_smoke" if args.smoke else "gpu_check"
    args.review_out = args.out / ("review_gpu_smoke" if args.smoke else "review_gpu")
    args.work.mkdir(parents=True, exist_ok=True)
    work = {"demo": run_demo, "review": run_review_part, "zero2": run_zero2}
    started = time.perf_counter()
    records = {p: timed(p, lambda p=p: work[p](args, args.work)) for p in parts}
    result = {
        "command": "python benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:]),
        "smoke": args.smoke,
        "device": device_name(),
        "machine": describe_machine(device_name()),
        "wall_s": round(time.perf_counter() - started, 1),
        "parts": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(render(result))
    print(render(result))
    return 0 if all(r["status"] in ("ok", "skipped") for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
