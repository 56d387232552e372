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

B. Training cost: seconds per distillation step of kdformer's public ``Distiller`` (built the
   way ``pipeline.distill`` builds it, timed with a ``TrainerCallback``) against a minimal
   hand-written PyTorch loop doing the same work on the same fixed-shape batches, in the same
   process, interleaved step by step, with warm-up steps excluded.

The two parts live in ``distill_quality.py`` and ``distill_cost.py`` (what they share, in
``distill_common.py``); this script runs them (``--parts quality``, ``--parts cost`` or both)
and writes one report.

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
import shlex
import sys
import time
from pathlib import Path
from typing import Any

# The benchmark is offline by design: the teacher and GLUE data are local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from distill_common import (  # noqa: E402
    KD_HARD_LABEL_WEIGHT,
    STUDENT_LAYERS,
    TEACHER,
    TEMPERATURE,
    warn_if_busy,
)
from distill_cost import cost_table, run_cost  # noqa: E402
from distill_quality import DEV_SIZES, quality_table, run_quality  # noqa: E402
from machine import describe_machine, load_average, machine_line  # noqa: E402

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
# Output
# ------------------------------------------------------------------------------------------


def to_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# kdformer distillation benchmark" + (" (SMOKE settings)" if result["smoke"] else ""),
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {machine_line(machine)}. Load average at start "
        f"{result['load_average_start']}, at end "
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
        "machine": describe_machine(),
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
