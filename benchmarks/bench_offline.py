"""Benchmark: the teacher-output cache, and kdformer against TextBrewer 0.2.1 on one job.

The job (all three runs): distil a task-trained MiniLM-L6 teacher into a 3-layer student
initialised from teacher layers 0, 2, 4 on N SST-2 training sentences for E epochs at batch 32,
AdamW (lr 1e-4, weight decay 0.01 except biases and LayerNorms, 10% linear warm-up, gradient
clipping at 1.0), loss = soft-logit KL at T=2 (x T^2) + hidden-state MSE on student layers
1, 2, 3 against teacher layers 2, 4, 6 (averaged) + 0.5 x hard-label cross-entropy; then the
student is scored on the full SST-2 dev set (872 sentences) with kdformer's scorer.

1. ``kdformer live``: ``kdformer.pipeline.distill`` with the teacher run at every step;
2. ``kdformer cached``: the same with ``distill.cache`` on, into an empty cache folder, so the
   fill (one teacher pass over the data) is paid inside the job;
3. ``textbrewer``: TextBrewer's ``GeneralDistiller`` with the teacher run at every step:
   ``kd_loss_type: ce`` at T=2 with ``kd_loss_weight`` T^2 = 4 (the cross-entropy differs from
   the KL by the teacher's entropy, a constant: same gradients), three ``hidden_mse`` matches of
   weight 1/3, ``hard_label_weight`` 0.5, the same student weights, optimiser, schedule and
   data (kdformer's tokenised features and collator, shuffled by a seeded DataLoader).

Each run is its own process (its peak resident memory is its own), one after another. Per run:
seconds per optimiser step (median of the step-to-step intervals), seconds per epoch, the
job's seconds (training plus, for the cache, its fill), peak RSS, dev accuracy. Ratios: a
cached epoch against an online epoch (kdformer), the whole job against TextBrewer's, and
the online step against TextBrewer's step.

``python benchmarks/bench_offline.py --teacher runs/headline-sst2/teacher --out
benchmarks/results`` (about 12 minutes on 2 CPU cores at the defaults); ``--smoke`` for a
one-minute end-to-end check. TextBrewer installs with ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, machine_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

JOBS = ("kdformer live", "textbrewer", "kdformer cached")
TEMPERATURE = 2.0
HARD_LABEL_WEIGHT = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--teacher", default="runs/headline-sst2/teacher",
                        help="a MiniLM-L6 (or any BERT) teacher fine-tuned on SST-2")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--train", type=int, default=4000, help="SST-2 training sentences")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=None, help="first N dev sentences")
    parser.add_argument("--student-layers", type=int, default=3, help="teacher layers 0, k, 2k..")
    parser.add_argument("--name", default="offline", help="output file name (JSON, Markdown)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jobs", default=",".join(JOBS), help="which runs, in this order")
    parser.add_argument("--smoke", action="store_true", help="256 sentences, 2 epochs")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # a child process: run one job
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.train, args.epochs, args.eval_limit = 256, 2, 128
    return args


# ------------------------------------------------------------------------------------------
# One job (in its own process)
# ------------------------------------------------------------------------------------------


def experiment(args: argparse.Namespace, work: Path, cached: bool) -> Any:
    from kdformer.config import ExperimentConfig

    return ExperimentConfig.model_validate(
        {
            "output_dir": str(work / "run"),
            "seed": args.seed,
            "task": {"name": "sst2", "data_dir": str(args.data_dir), "max_length": args.max_length,
                     "max_train_samples": args.train, "max_eval_samples": args.eval_limit},
            "teacher": {"name": args.teacher},
            "student": {"num_layers": args.student_layers, "init": "teacher",
                        "init_layers": "uniform"},
            "distill": {
                "hard_label_weight": HARD_LABEL_WEIGHT,
                "knowledge": [{"type": "logits", "temperature": TEMPERATURE},
                              {"type": "hidden", "loss": "mse"}],
                "cache": {"enabled": cached, "dir": str(work / "cache")},
                "train": {"epochs": args.epochs, "batch_size": args.batch_size,
                          "learning_rate": 1e-4, "save_steps": 100_000, "logging_steps": 50,
                          "report_to": []},
            },
        }
    )  # fmt: skip


class Clock:
    """Step and epoch timestamps."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.epochs: list[float] = []
        self._epoch_start = 0.0

    def step(self) -> None:
        self.steps.append(time.perf_counter())

    def epoch_begin(self) -> None:
        self._epoch_start = time.perf_counter()

    def epoch_end(self) -> None:
        self.epochs.append(time.perf_counter() - self._epoch_start)

    def step_seconds(self) -> float:
        gaps = [b - a for a, b in zip(self.steps, self.steps[1:])]
        return statistics.median(gaps)


def run_kdformer(args: argparse.Namespace, work: Path, cached: bool) -> dict[str, Any]:
    from transformers import TrainerCallback

    from kdformer.pipeline import distill
    from kdformer.pipeline.outputs import Paths

    clock = Clock()

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            clock.step()

        def on_epoch_begin(self, *a, **k):
            clock.epoch_begin()

        def on_epoch_end(self, *a, **k):
            clock.epoch_end()

    config = experiment(args, work, cached)
    distill(config, overwrite=True, callbacks=[Timer()])
    student = Paths(config.output_dir).student
    record = json.loads((student / "training.json").read_text())
    cache = record.get("teacher_cache", {}).get("main")
    fill = cache["fill_seconds"] if cache else 0.0
    return {
        "steps": record["steps"],
        "step_seconds": clock.step_seconds(),
        "epoch_seconds": clock.epochs,
        "fill_seconds": fill,
        "job_seconds": fill + sum(clock.epochs),
        "cache_bytes_per_input": cache["bytes_per_input"] if cache else None,
        "cache_bytes": cache["bytes"] if cache else None,
        "accuracy": score(args, config, student),
    }


def score(args: argparse.Namespace, config: Any, model_dir: Path) -> float:
    from kdformer.models import load_tokenizer
    from kdformer.pipeline.teachers import load_task_model
    from kdformer.tasks import build_task
    from kdformer.tasks.evaluation import evaluate_model

    task = build_task(config.task, config.seed)
    from kdformer.config import ModelConfig

    reference = ModelConfig(name=str(model_dir))
    model = load_task_model(reference, task, "student", "")
    metrics = evaluate_model(model, task, task.load("eval"), load_tokenizer(reference), 128, "cpu")
    return float(metrics["accuracy"])


class PlainDict:
    """TextBrewer passes a batch as keyword arguments only when it is exactly a ``dict``;
    transformers' collators return a ``BatchEncoding``."""

    def __init__(self, collate: Any):
        self.collate = collate

    def __call__(self, features: list) -> dict:
        return dict(self.collate(features))


def run_textbrewer(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch
    import transformers
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig

    from kdformer.config import StudentConfig
    from kdformer.models import load_tokenizer
    from kdformer.pipeline.teachers import load_teacher
    from kdformer.students import build_student
    from kdformer.tasks import build_task

    config = experiment(args, work, cached=False)
    transformers.set_seed(config.seed)
    task = build_task(config.task, config.seed)
    teacher = load_teacher(config.teacher, task).eval()
    tokenizer = load_tokenizer(config.teacher)
    student = build_student(
        teacher, StudentConfig(num_layers=args.student_layers, init="teacher",
                               init_layers="uniform"),
        task.model_class, config.seed,
    )  # fmt: skip
    features = task.model_features(task.tokenize(task.load("train"), tokenizer))
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        features, batch_size=args.batch_size, shuffle=True, generator=generator,
        collate_fn=PlainDict(task.collator(tokenizer, "train")),
    )  # fmt: skip
    decay = [
        p for n, p in student.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n
    ]
    no_decay = [p for n, p in student.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4,
    )
    total = len(loader) * args.epochs

    def adaptor(batch: dict, outputs: Any) -> dict:
        return {
            "logits": outputs.logits,
            "hidden": outputs.hidden_states,
            "inputs_mask": batch["attention_mask"],
            "losses": [outputs.loss],
        }

    teacher.config.output_hidden_states = student.config.output_hidden_states = True
    from kdformer.matching import layer_pairs

    pairs = layer_pairs("uniform", teacher.config.num_hidden_layers, args.student_layers)
    matches = [
        {"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse",
         "weight": 1 / len(pairs)}
        for s, t in pairs
    ]  # fmt: skip
    distiller = GeneralDistiller(
        train_config=TrainingConfig(
            output_dir=str(work / "textbrewer"), device="cpu", ckpt_frequency=1,
            ckpt_epoch_frequency=args.epochs, log_dir=None,
        ),
        distill_config=DistillationConfig(
            temperature=TEMPERATURE, kd_loss_type="ce", kd_loss_weight=TEMPERATURE**2,
            hard_label_weight=HARD_LABEL_WEIGHT, intermediate_matches=matches,
        ),
        model_T=teacher, model_S=student, adaptor_T=adaptor, adaptor_S=adaptor,
    )  # fmt: skip
    clock = Clock()
    original = distiller.train_on_batch
    per_epoch = len(loader)

    def timed(batch: Any, args_: Any) -> Any:
        if len(clock.steps) % per_epoch == 0:
            if clock.steps:
                clock.epoch_end()
            clock.epoch_begin()
        clock.step()
        return original(batch, args_)

    distiller.train_on_batch = timed
    with distiller:
        distiller.train(
            optimizer, loader, num_epochs=args.epochs,
            scheduler_class=transformers.get_linear_schedule_with_warmup,
            scheduler_args={"num_warmup_steps": math.ceil(0.1 * total),
                            "num_training_steps": total},
            scheduler=None, max_grad_norm=1.0,
        )  # fmt: skip
    clock.epoch_end()
    student.config.output_hidden_states = False
    folder = work / "textbrewer-student"
    student.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {
        "steps": len(clock.steps),
        "step_seconds": clock.step_seconds(),
        "epoch_seconds": clock.epochs,
        "fill_seconds": 0.0,
        "job_seconds": sum(clock.epochs),
        "cache_bytes_per_input": None,
        "cache_bytes": None,
        "accuracy": score(args, config, folder),
    }


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="kdformer-bench-offline-") as scratch:
        work = Path(scratch)
        if args.job == "textbrewer":
            result = run_textbrewer(args, work)
        else:
            result = run_kdformer(args, work, cached=args.job == "kdformer cached")
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.result.write_text(json.dumps(result, indent=2))


# ------------------------------------------------------------------------------------------
# The parent: run the jobs, compare, write JSON and Markdown
# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.job:
        child(args)
        return
    if not Path(args.teacher).is_dir():
        sys.exit(
            f"no teacher in {args.teacher}: fine-tune one first (`kdformer run "
            "configs/headline/sst2_full.yaml --stages finetune`) or pass --teacher"
        )
    results: dict[str, Any] = {}
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--smoke"]
    for job in [j.strip() for j in args.jobs.split(",") if j.strip()]:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            path = Path(handle.name)
        print(f"[bench_offline] {job} ...", flush=True)
        started = time.perf_counter()
        command = [sys.executable, __file__, *forwarded, "--job", job, "--result", str(path),
                   "--train", str(args.train), "--epochs", str(args.epochs)]  # fmt: skip
        if args.eval_limit:
            command += ["--eval-limit", str(args.eval_limit)]
        subprocess.run(command, check=True)
        results[job] = json.loads(path.read_text())
        results[job]["process_seconds"] = time.perf_counter() - started
        path.unlink()
        print(f"[bench_offline] {job}: {json.dumps(results[job])}", flush=True)
    summary = compare(results)
    payload = {
        "setup": {
            "teacher": args.teacher, "student_layers": args.student_layers,
            "train_sentences": args.train, "epochs": args.epochs,
            "batch_size": args.batch_size, "max_length": args.max_length,
            "eval_sentences": args.eval_limit or 872, "machine": describe_machine(),
        },
        "runs": results,
        "ratios": summary,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.name}_smoke" if args.smoke else args.name
    (args.out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(payload))
    print(markdown(payload))


def compare(results: dict[str, Any]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    live, cached, brewer = (
        results.get(j) for j in ("kdformer live", "kdformer cached", "textbrewer")
    )
    if live and cached:
        ratios["cached_epoch_vs_online_epoch"] = statistics.median(
            cached["epoch_seconds"]
        ) / statistics.median(live["epoch_seconds"])
        ratios["cached_job_vs_online_job"] = cached["job_seconds"] / live["job_seconds"]
        ratios["accuracy_cached_minus_online_pts"] = 100 * (cached["accuracy"] - live["accuracy"])
    if brewer and cached:
        ratios["textbrewer_job_vs_kdformer_cached_job"] = (
            brewer["job_seconds"] / cached["job_seconds"]
        )
        ratios["accuracy_cached_minus_textbrewer_pts"] = 100 * (
            cached["accuracy"] - brewer["accuracy"]
        )
    if brewer and live:
        ratios["kdformer_online_step_vs_textbrewer_step"] = (
            live["step_seconds"] / brewer["step_seconds"]
        )
    return {k: round(v, 3) for k, v in ratios.items()}


def markdown(payload: dict[str, Any]) -> str:
    setup, runs, ratios = payload["setup"], payload["runs"], payload["ratios"]
    lines = [
        "# Teacher cache and TextBrewer 0.2.1, one distillation job",
        "",
        f"MiniLM-L6 teacher ({setup['teacher']}) -> {setup['student_layers']}-layer student, {setup['train_sentences']:,} "
        f"SST-2 sentences x {setup['epochs']} epochs, batch {setup['batch_size']}, max length "
        f"{setup['max_length']}; logits KL T=2 + hidden MSE + 0.5 x hard labels; dev accuracy on "
        f"{setup['eval_sentences']} sentences. Machine: {machine_line(setup['machine'])}. Each run in its own "
        "process, one after another.",
        "",
        "| run | s/step (median) | s/epoch | cache fill s | job s | peak RSS MiB | cache B/input | dev accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        epochs = " / ".join(f"{s:.1f}" for s in r["epoch_seconds"])
        size = f"{r['cache_bytes_per_input']:,.0f}" if r["cache_bytes_per_input"] else "-"
        lines.append(
            f"| {name} | {r['step_seconds']:.3f} | {epochs} | {r['fill_seconds']:.1f} | "
            f"{r['job_seconds']:.1f} | {r['peak_rss_mib']:.0f} | {size} | "
            f"{100 * r['accuracy']:.2f} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in ratios.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
