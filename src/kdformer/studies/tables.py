"""A study's results as tables: runs.csv (one row per run) and summary.md (mean ± std over seeds
per task and point, with retention and speed-up against the teacher); write_outputs also draws
the plots."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdformer.config.study import short_keys, value_text
from kdformer.report import gain_kept_pct
from kdformer.studies.plan import StudyPlan, read_json, read_teachers


def baselines(plan: StudyPlan) -> dict[str, dict[str, float] | None]:
    """run id -> trivial-baseline metrics on its evaluation set (kept with the teacher
    measurements in teachers.json; None until measured, and for regression)."""
    teachers = read_teachers(plan)
    return {r.run_id: (teachers.get(r.measure_key) or {}).get("baseline") for r in plan.runs}


def gains(plan: StudyPlan, results: list[dict[str, Any]]) -> dict[str, float | None]:
    """run id -> % of the teacher's gain over the trivial baseline that the run keeps."""

    floors = baselines(plan)
    found: dict[str, float | None] = {}
    for r in results:
        main, floor = r["main_metric"], floors.get(r["run_id"]) or {}
        found[r["run_id"]] = gain_kept_pct(
            r["metrics"].get(main), r["teacher_metrics"].get(main), floor.get(main)
        )
    return found


def collect_results(plan: StudyPlan) -> list[dict[str, Any]]:
    """result.json of every finished run, in plan order."""
    found = []
    for run in plan.runs:
        result = read_json(run.result_file) if run.finished else None
        if result is not None:
            found.append(result)
    return found


def mean_std(values: list[float]) -> tuple[float, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _pm(values: list[float], digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    mean, std = mean_std([v * scale for v in values if v is not None])
    if math.isnan(mean):
        return "-"
    text = f"{mean:.{digits}f}"
    if std is not None:
        text += f" ± {std:.{digits}f}"
    return text + suffix


def _params(values: list[float]) -> str:
    """Parameter count in millions (the same for every seed of a point)."""
    if not values:
        return "-"
    millions = statistics.fmean(values) / 1e6
    return f"{millions:.2f}" if millions < 10 else f"{millions:.1f}"


@dataclass
class PointSummary:
    """All seeds of one task x variant x grid point."""

    task: str
    point: str
    variant: str | None
    grid: dict[str, Any]
    results: list[dict[str, Any]]

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.results if r.get(key) is not None]

    def metric(self, name: str) -> list[float]:
        return [r["metrics"][name] for r in self.results if name in r["metrics"]]


def summarise(plan: StudyPlan, results: list[dict[str, Any]]) -> dict[str, list[PointSummary]]:
    """task label -> points (in plan order) with the finished runs of each."""
    by_id = {r["run_id"]: r for r in results}
    tasks: dict[str, dict[str, PointSummary]] = {}
    for run in plan.runs:
        points = tasks.setdefault(run.task, {})
        summary = points.setdefault(
            run.point, PointSummary(run.task, run.point, run.variant, run.grid, [])
        )
        if run.run_id in by_id:
            summary.results.append(by_id[run.run_id])
    return {task: list(points.values()) for task, points in tasks.items()}


def write_runs_csv(plan: StudyPlan, results: list[dict[str, Any]], path: Path) -> None:
    grid_keys = list(plan.study.grid)
    metric_names: list[str] = []
    for r in results:
        metric_names += [m for m in r["metrics"] if m not in metric_names]
    header = [
        "run_id",
        "task",
        "variant",
        *grid_keys,
        "seed",
        "main_metric",
        *metric_names,
        *[f"teacher_{m}" for m in metric_names],
        "retention_pct",
        "gain_kept_pct",
        "parameters",
        "teacher_parameters",
        "latency_ms",
        "teacher_latency_ms",
        "speedup",
        "layers",
        "hidden",
        "train_seconds",
        "overrides",
    ]
    kept = gains(plan, results)
    scratch = path.with_name(path.name + ".tmp")
    with scratch.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            writer.writerow(
                [
                    r["run_id"],
                    r["task"],
                    r["variant"] or "",
                    *[value_text(r["grid"].get(k)) for k in grid_keys],
                    r["seed"],
                    r["main_metric"],
                    *[r["metrics"].get(m, "") for m in metric_names],
                    *[r["teacher_metrics"].get(m, "") for m in metric_names],
                    r["retention_pct"],
                    kept.get(r["run_id"]),
                    r["parameters"],
                    r["teacher_parameters"],
                    r["latency_ms"],
                    r["teacher_latency_ms"],
                    r["speedup"],
                    r["shape"].get("layers"),
                    r["shape"].get("hidden"),
                    r.get("train_seconds"),
                    " ".join(r["overrides"]),
                ]
            )
    scratch.replace(path)


def summary_markdown(plan: StudyPlan, results: list[dict[str, Any]]) -> str:
    study = plan.study
    grid_keys = list(study.grid)
    short = short_keys(grid_keys)
    teachers = read_teachers(plan)
    kept = gains(plan, results)
    done = len(results)
    lines = [f"# Study: {study.name}", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += [
        f"{done} of {len(plan.runs)} runs finished; seeds {', '.join(map(str, study.seeds))}. "
        "Metrics x100 and retention (% of the teacher's main metric) as mean ± std over the "
        "finished seeds (n); std needs n >= 2. Gain kept: % of the teacher's gain over the "
        "task's trivial baseline (classification: always predicting the most frequent training "
        "label; NER: every word O; QA: the context's first words) that the student keeps; 0 "
        "means no better than that baseline.",
        "",
    ]
    lines += [
        "Latency: median ms per forward pass of one batch (its size under each task). Each "
        "student is timed round-robin with its teacher in the same process; speed-up = teacher "
        "ms / student ms of that same measurement.",
        "",
    ]
    for task, points in summarise(plan, results).items():
        task_results = [r for p in points for r in p.results]
        metric_names: list[str] = []
        for r in task_results:
            metric_names += [m for m in r["metrics"] if m not in metric_names]
        main = task_results[0]["main_metric"] if task_results else ""
        lines += [f"## {task}" + (f" (main metric: {main})" if main else ""), ""]
        keys = dict.fromkeys(r.measure_key for r in plan.runs if r.task == task)
        measured = [teachers[k] for k in keys if k in teachers]
        for t in measured:
            scores = ", ".join(f"{m} {100 * v:.1f}" for m, v in t["metrics"].items())
            lines.append(
                f"Teacher `{t['teacher']}`: {scores}; {t['parameters'] / 1e6:.1f}M params; "
                f"{t['latency_ms']:.1f} ms/batch (timed alone)."
            )
            training = t.get("training") or {}
            if training.get("learning_curve"):
                from kdformer.learning_curve import describe_curve

                minutes = (training.get("train_seconds") or 0) / 60
                kept_step = training["learning_curve"].get("kept_step")
                lines.append(
                    f"Teacher training: {training['steps']} steps, {minutes:.1f} min; learning "
                    f"curve: {describe_curve(training['learning_curve'])}"
                    + (f"; weights kept from step {kept_step}." if kept_step is not None else ".")
                )
            if t.get("baseline"):
                floor = ", ".join(f"{m} {100 * v:.1f}" for m, v in t["baseline"].items())
                name = t.get("baseline_name", "majority class")
                lines.append(f"Trivial baseline ({name}): {floor}.")
        setup = next((r["latency_setup"] for r in task_results), None)
        if setup:  # each task times its own length (SST-2 64 tokens, MRPC 128)
            lines.append(
                f"Latency batch: {setup['batch_size']} x {setup['seq_length']} tokens on "
                f"{setup['device']} ({setup['torch_threads']} torch threads)."
            )
        if measured or setup:
            lines.append("")
        dims = (["variant"] if study.variants else []) + [short[k] for k in grid_keys]
        header = [
            *(dims or ["run"]),
            "n",
            *metric_names,
            "retention %",
            "gain kept %",
            "params M",
            "student ms",
            "teacher ms",
            "speed-up",
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for p in points:
            cells = ([p.variant or ""] if study.variants else []) + [
                value_text(p.grid[k]) for k in grid_keys
            ]
            cells = cells or [p.point]
            lines.append(
                "| "
                + " | ".join(
                    [
                        *cells,
                        str(len(p.results)),
                        *[_pm(p.metric(m), 1, 100) for m in metric_names],
                        _pm(p.values("retention_pct"), 1),
                        _pm([g for r in p.results if (g := kept.get(r["run_id"])) is not None], 1),
                        _params(p.values("parameters")),
                        _pm(p.values("latency_ms"), 1),
                        _pm(p.values("teacher_latency_ms"), 1),
                        _pm(p.values("speedup"), 2, suffix="x"),
                    ]
                )
                + " |"
            )
        lines.append("")
    lines += [
        "Per-run figures: runs.csv and runs/<run-id>/result.json (with each run's overrides).",
        "",
    ]
    return "\n".join(lines)
