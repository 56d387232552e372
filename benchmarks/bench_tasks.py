"""Benchmark: distillation beyond sentence classification (NER, extractive QA, two stages).

Three parts, each through kdformer's own pipeline with the offline MiniLM-L6 teacher (BERT,
6 x 384) and 3-layer students initialised from teacher layers 0, 2, 4:

``conll``  CoNLL-2003 NER: the teacher fine-tuned on the full training file; a KD student
           (per-token soft logits at T=2 on the labelled first pieces + hidden-state MSE + 0.5 x
           hard labels) and a no-KD student of the same shape (same init, steps, seed, data
           order; hard labels only). Entity F1 (seqeval, CoNLL scoring) on the full test file.
``squad``  SQuAD v1.1: the only SQuAD data here is 40 of the 48 dev articles, split by article
           (30 train / 10 eval, deterministic: the titles whose SHA-1 is lowest are held out).
           Teacher, KD student (start/end soft logits + hidden + 0.5 x hard labels), no-KD
           student; exact match and F1 (official normalisation) on the 10 held-out articles.
``two-stage``  SST-2 and CoNLL-2003: a general student distilled from MiniLM-L6 (before task
           fine-tuning) on the raw-text corpus (16 novels, blocks of 128 tokens; hidden states
           + MiniLMv2 Q/K/V relations, as MiniLM-L6 has no MLM head), then task distillation
           into it; against a one-stage student from teacher-layer initialisation trained for
           as many tokens as both stages together (``kdformer run`` with a ``general:`` section).

Every model is measured side by side with ``pipeline.measure_models`` (metrics, parameters,
latency of the teacher and students timed round-robin in one process). Results go to
``--out``/tasks.json and tasks.md after each part; finished models in ``--work`` are reused, so
an interrupted run resumes. ``--smoke`` runs every part on tiny slices in a few minutes (for
checking the script; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, machine_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from kdformer import pipeline  # noqa: E402
from kdformer.config import ExperimentConfig, load_config  # noqa: E402

KD = "distill.knowledge=[{type: logits, temperature: 2.0}, {type: hidden}]"
NO_KD = ["distill.knowledge=[]", "distill.hard_label_weight=1.0"]
PARTS = ("conll", "squad", "two-stage")
TRAIN_SECONDS_NOTE = (
    "each model's training.json; for models trained before kdformer recorded it, the last "
    "train_runtime in its final checkpoint's log"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdformer-bench-tasks"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument(
        "--two-stage-tasks",
        default="sst2,conll",
        help="comma-separated tasks of the two-stage part: sst2, conll",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny slices, to check the script")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------


def settings(smoke: bool) -> dict[str, Any]:
    """Sizes of every part: full data normally, tiny slices with --smoke."""
    if smoke:
        train = "{max_steps: 6, batch_size: 8, learning_rate: 1.0e-4, save_steps: 1000, logging_steps: 3, report_to: []}"
        return {
            "conll": ["task.max_train_samples=64", "task.max_eval_samples=64"],
            "squad": ["task.max_train_samples=48", "task.max_eval_samples=24"],
            "sst2": ["task.max_train_samples=64", "task.max_eval_samples=64"],
            "teacher_train": train,
            "student_train": train,
            "general_train": "{max_steps: 4, batch_size: 8, learning_rate: 1.0e-4, save_steps: 1000, report_to: []}",
            "general_blocks": 64,
            "allow_weak": ["distill.allow_weak_teacher=true"],
            "latency": ["report.latency_repeats=3", "report.latency_warmup=1"],
        }
    return {
        "conll": [],
        "squad": [],
        "sst2": ["task.max_train_samples=4000"],
        "teacher_train": "{epochs: 3, batch_size: 32, learning_rate: 5.0e-5, save_steps: 500, logging_steps: 50, report_to: []}",
        "squad_teacher_train": "{epochs: 2, batch_size: 32, learning_rate: 1.0e-4, save_steps: 100, logging_steps: 25, report_to: []}",
        "student_train": "{epochs: 3, batch_size: 32, learning_rate: 1.0e-4, save_steps: 500, logging_steps: 50, report_to: []}",
        "squad_student_train": "{epochs: 2, batch_size: 32, learning_rate: 1.0e-4, save_steps: 100, logging_steps: 25, report_to: []}",
        "general_train": "{max_steps: 400, batch_size: 32, learning_rate: 1.0e-4, warmup_ratio: 0.05, save_steps: 100, logging_steps: 25, report_to: []}",
        "general_blocks": None,
        "allow_weak": [],
        "latency": ["report.latency_repeats=20", "report.latency_warmup=3"],
    }


def task_overrides(name: str, data: Path) -> list[str]:
    if name == "conll":
        return [
            f"task={{type: ner, name: conll2003, data_dir: {data / 'conll2003'}, eval_split: test, max_length: 128}}",
            "report.latency_seq_length=64",
        ]
    if name == "squad":
        return [
            f"task={{type: qa, name: squad, train_file: {data / 'squad/dev-v1.1-part-a.json'}, max_length: 256, doc_stride: 64}}",
            "report.latency_seq_length=256",
        ]
    return [
        f"task={{name: sst2, data_dir: {data / 'glue'}, max_length: 64}}",
        "report.latency_seq_length=64",
    ]


def experiment(
    folder: Path, name: str, data: Path, sizes: dict[str, Any], extra: list[str]
) -> ExperimentConfig:
    teacher_train = sizes.get(f"{name}_teacher_train", sizes["teacher_train"])
    student_train = sizes.get(f"{name}_student_train", sizes["student_train"])
    overrides = [
        f"output_dir={folder}",
        "teacher.name=minilm-l6",
        *task_overrides(name, data),
        *sizes["conll" if name == "conll" else "squad" if name == "squad" else "sst2"],
        f"finetune={teacher_train}",
        "student={num_layers: 3, init: teacher, init_layers: uniform}",
        KD,
        "distill.hard_label_weight=0.5",
        f"distill.train={student_train}",
        "report.latency_batch_size=32",
        *sizes["latency"],
        *sizes["allow_weak"],
        *extra,
    ]
    return load_config(None, overrides)


def train_seconds(model: Path) -> float | None:
    """Seconds the model spent training, summed over resumed runs (``training.json``). For a
    model trained before kdformer recorded them: the last ``train_runtime`` in the final
    checkpoint's log (it misses the steps after that log line and restarts on resume)."""
    record = json.loads((model / "training.json").read_text())
    if "train_seconds" in record:
        return record["train_seconds"]
    checkpoints = model.parent / "checkpoints" / model.name
    states = sorted(
        checkpoints.glob("checkpoint-*/trainer_state.json"),
        key=lambda p: int(p.parent.name.split("-")[-1]),
    )
    if not states:
        return None
    logged = [
        e["train_runtime"]
        for e in json.loads(states[-1].read_text())["log_history"]
        if "train_runtime" in e
    ]
    return logged[-1] if logged else None


def timed(stage: str, record: dict[str, float], fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    record[stage] = round(time.perf_counter() - start, 1)
    return result


# ------------------------------------------------------------------------------------------
# Parts
# ------------------------------------------------------------------------------------------


def teacher_vs_students(
    name: str, args: argparse.Namespace, sizes: dict[str, Any]
) -> dict[str, Any]:
    """Teacher, KD student and no-KD student of one task, measured side by side."""
    root = args.work / name
    kd = experiment(root / "kd", name, args.data, sizes, [])
    seconds: dict[str, float] = {}
    teacher = timed("teacher fine-tuning", seconds, pipeline.finetune, kd)
    no_kd = experiment(
        root / "no_kd", name, args.data, sizes, [f"teacher.name={teacher}", "finetune=null", *NO_KD]
    )
    task = pipeline.validate(kd, ["distill", "evaluate"])
    timed("KD student", seconds, pipeline.distill, kd, task=task)
    timed("no-KD student", seconds, pipeline.distill, no_kd, task=task)
    report = timed(
        "measuring",
        seconds,
        pipeline.measure_models,
        [
            ("teacher", teacher),
            ("KD student", kd.output_dir / "student"),
            ("no-KD student", no_kd.output_dir / "student"),
        ],
        kd.task,
        kd.report,
        kd.seed,
        kd.distill.train.eval_batch_size,
        task=task,
    )
    report["seconds"] = seconds
    report["train_seconds"] = {
        "teacher": train_seconds(teacher),
        "KD student": train_seconds(kd.output_dir / "student"),
        "no-KD student": train_seconds(no_kd.output_dir / "student"),
    }
    report["data"] = task.describe_data()
    report["config"] = kd.model_dump(mode="json")
    return report


def two_stage(args: argparse.Namespace, sizes: dict[str, Any]) -> dict[str, Any]:
    """Two-stage (general + task) vs one-stage at the same tokens, on SST-2 and CoNLL-2003.
    The general student is distilled once and shared; CoNLL's teacher is the conll part's."""
    blocks = f", max_train_samples: {sizes['general_blocks']}" if sizes["general_blocks"] else ""
    general = (
        f"general={{task: {{type: text, files: {args.data / 'text/litbank-novels'}, max_length: 128"
        f"{blocks}}}, knowledge: [{{type: hidden}}, {{type: qkv_relations, relation_heads: 12}}], "
        f"train: {sizes['general_train']}, compare_one_stage: true}}"
    )
    results = {}
    shared_general: Path | None = None
    names = [n.strip() for n in args.two_stage_tasks.split(",") if n.strip()]
    unknown = sorted(set(names) - {"sst2", "conll"})
    if unknown:
        raise SystemExit(f"unknown two-stage task(s) {unknown}; valid: sst2, conll")
    for name in names:
        root = args.work / "two_stage" / name
        config = experiment(root, name, args.data, sizes, [general])
        conll_teacher = args.work / "conll" / "kd" / "teacher"
        if (
            name == "conll"
            and pipeline.is_finished(conll_teacher)
            and not (root / "teacher").exists()
        ):
            root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(conll_teacher, root / "teacher")  # the same fine-tuning config
        if shared_general is not None and not (root / "general").exists():
            shutil.copytree(shared_general, root / "general")
        seconds: dict[str, float] = {}
        report = timed("all stages", seconds, pipeline.run, config)
        shared_general = root / "general"
        for stage, folder in (
            ("general", root / "general/student"),
            ("task", root / "student"),
            ("one-stage", root / "one_stage/student"),
        ):
            record = json.loads((folder / "training.json").read_text())
            seconds[f"{stage} steps"] = record["steps"]
            seconds[f"{stage} train seconds"] = record.get("train_seconds")
        report["seconds"] = seconds
        results[name] = report
    return results


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def metric_table(report: dict[str, Any], metrics: list[str]) -> list[str]:
    header = ["model", *metrics, "% of teacher", "% of gain", "params M", "ms/batch", "speed-up"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["models"]:
        cells = [
            row["name"],
            *(f"{100 * row['metrics'].get(m, float('nan')):.2f}" for m in metrics),
        ]
        cells += [
            pct(row["retention_pct"]),
            pct(row.get("gain_kept_pct")),
            f"{row['parameters'] / 1e6:.1f}",
        ]
        cells += [f"{row['latency_ms']:.1f}", f"{row['speedup']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    baseline = report.get("baseline")
    if baseline:
        cells = [
            baseline["name"],
            *(f"{100 * baseline['metrics'].get(m, float('nan')):.2f}" for m in metrics),
        ]
        lines.append("| " + " | ".join(cells + ["-"] * 5) + " |")
    if report.get("warning"):
        lines += ["", f"**Warning: {report['warning']}.**"]
    setup = report["latency_setup"]
    lines.append("")
    lines.append(
        f"Latency: median of {setup['repeats']} forward passes of a {setup['batch_size']} x "
        f"{setup['seq_length']} batch on {setup['device']} ({setup['torch_threads']} threads), "
        "all models timed round-robin in one process."
    )
    return lines


def command_line(report: dict[str, Any]) -> str:
    return f"Command: `{report['command']}`." if report.get("command") else ""


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Task benchmark (NER, extractive QA, two-stage)", ""]
    lines.append(f"Machine: {machine_line(results['machine'])}.")
    lines.append("")
    metrics = {"conll": ["f1", "precision", "recall"], "squad": ["exact_match", "f1"]}
    titles = {
        "conll": "CoNLL-2003 NER (full test file, entity F1)",
        "squad": "SQuAD v1.1, split by article (held-out articles)",
    }
    for part in ("conll", "squad"):
        if part not in results:
            continue
        report = results[part]
        lines += [f"## {titles[part]}", "", report["data"], "", command_line(report), ""]
        lines += metric_table(report, metrics[part])
        kd, no_kd = report["models"][1], report["models"][2]
        main = report["main_metric"]
        gap = 100 * (kd["metrics"][main] - no_kd["metrics"][main])
        lines += [
            "",
            f"KD vs no-KD: {gap:+.2f} {main} points. Training seconds "
            f"({TRAIN_SECONDS_NOTE}): {report.get('train_seconds')}. Wall seconds of this "
            f"bench run (finished models are reused): {report['seconds']}.",
            "",
        ]
    if "two-stage" in results:
        lines += ["## Two-stage vs one-stage at the same number of training tokens", ""]
        for report in results["two-stage"].values():
            main = report["main_metric"]
            lines += [f"### {report['task']} ({main})", ""]
            lines += [command_line(report), ""]
            lines += metric_table(report, [main])
            compute = report.get("two_stage", {})
            lines += [
                "",
                f"General stage: {compute.get('general_steps')} steps, {compute.get('general_tokens', 0):,} tokens; task "
                f"stage {compute.get('task_steps')} steps; one-stage {compute.get('one_stage_steps')} steps. "
                f"Seconds: {report['seconds']}.",
                "",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"unknown part(s) {unknown}; valid: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    sizes = settings(args.smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "tasks-smoke" if args.smoke else "tasks"
    path = args.out / f"{name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = describe_machine()
    command = "python benchmarks/bench_tasks.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    for part in parts:
        start = time.perf_counter()
        if part == "two-stage":  # tasks run separately (--two-stage-tasks) accumulate
            found = two_stage(args, sizes)
            for report in found.values():
                report["command"] = command
            results.setdefault(part, {}).update(found)
        else:
            results[part] = {**teacher_vs_students(part, args, sizes), "command": command}
        results.setdefault("wall_seconds", {})[part] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        (args.out / f"{name}.md").write_text(markdown(results))
        print(
            f"[bench] {part} done in {results['wall_seconds'][part]:.0f} s; wrote {path}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
