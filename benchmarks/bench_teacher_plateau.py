"""Teachers trained to their plateau: fine-tune each config's teacher with ``stop_at_plateau``
(resumable: a finished teacher is reused, an interrupted one resumes from its checkpoint) and
write its learning curve, the plateau verdict, seed and training time.

    python benchmarks/bench_teacher_plateau.py configs/teachers/mrpc.yaml [more configs]

Writes ``teacher_plateau.json`` / ``teacher_plateau.md`` and one ``teacher_curve_<task>.png``
per teacher to ``--out`` (benchmarks/results); results of earlier runs in the JSON are kept
(one entry per config file), so teachers can be trained in separate sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from machine import describe_machine, machine_line

ROOT = Path(__file__).resolve().parents[1]


def train_teacher(config_file: Path, overrides: list[str]) -> dict[str, Any]:
    from kdformer import pipeline
    from kdformer.config import load_config
    from kdformer.learning_curve import describe_curve

    config = load_config(config_file, overrides)
    assert config.finetune is not None, f"{config_file} has no finetune section"
    folder = pipeline.finetune(config, resume=True)
    record = json.loads((folder / "training.json").read_text())
    curve = record.get("learning_curve")
    if curve is None:
        raise SystemExit(f"{config_file}: no learning curve (set finetune.eval_steps)")
    return {
        "config": str(config_file),
        "task": config.task.name,
        "teacher": config.teacher.name,
        "seed": config.seed,
        "train_examples": config.task.max_train_samples or "all",
        "batch_size": config.finetune.batch_size,
        "learning_rate": config.finetune.learning_rate,
        "max_steps": config.finetune.max_steps,
        "steps": record["steps"],
        "epochs": record["epochs"],
        "train_seconds": record["train_seconds"],
        "curve": curve,
        "summary": describe_curve(curve),
    }


def plot_curve(entry: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    curve = entry["curve"]
    steps = [s for s, _ in curve["points"]]
    values = [v for _, v in curve["points"]]
    figure = Figure(figsize=(5, 3.2), layout="constrained")
    ax = figure.add_subplot()
    ax.plot(steps, values, marker="o", markersize=3)
    start = (1 - curve["window"]) * steps[-1]
    ax.axvspan(start, steps[-1], color="grey", alpha=0.15, label="last fifth")
    ax.set(
        title=f"{entry['task']} teacher ({entry['teacher']})",
        xlabel="optimiser steps",
        ylabel=f"dev {curve['metric']}",
    )
    ax.legend(fontsize=8)
    figure.savefig(path, dpi=120)


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Teachers trained to their plateau",
        "",
        "`python benchmarks/bench_teacher_plateau.py CONFIG...`: the teacher fine-tuned with "
        "`stop_at_plateau` (scored on the dev set every `eval_steps`; stopped once the last "
        "fifth of the steps adds less than `plateau_gain` points to the best score). With "
        "`keep_best`, the saved teacher is the best evaluation's (kept step), not the last "
        "step's.",
        "",
        "| task | teacher | train examples | seed | steps (epochs) | best dev | kept step "
        "| last fifth adds | plateau | CPU/GPU time | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["teachers"].values():
        curve = entry["curve"]
        gain = curve["last_window_gain"]
        lines.append(
            f"| {entry['task']} | {entry['teacher']} | {entry['train_examples']} | "
            f"{entry['seed']} | {entry['steps']} ({entry['epochs']:.1f}) | {curve['best']:.2f} "
            f"{curve['metric']} | {curve.get('kept_step') or 'last'} | "
            f"{'-' if gain is None else f'{gain:.2f}'} | "
            f"{'yes' if curve['plateau'] else 'no' if curve['plateau'] is False else 'not judged'}"
            f" | {entry['train_seconds'] / 60:.1f} min | {machine_line(entry['machine'])} |"
        )
    lines += ["", "Curves (step: dev score):", ""]
    for entry in results["teachers"].values():
        points = ", ".join(f"{s}: {v:.2f}" for s, v in entry["curve"]["points"])
        lines.append(f"- {entry['task']}: {points}. {entry['summary']}.")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--override", action="append", default=[], help="key=value, each run")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "teacher_plateau.json"
    results = json.loads(store.read_text()) if store.is_file() else {"teachers": {}}
    for config_file in args.configs:
        entry = train_teacher(config_file, args.override)
        entry["machine"] = describe_machine()
        results["teachers"][str(config_file)] = entry
        plot_curve(entry, args.out / f"teacher_curve_{entry['task']}.png")
        store.write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "teacher_plateau.md").write_text(render(results))
        print(entry["summary"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
