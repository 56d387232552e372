"""Running a study: fine-tune each shared teacher once, distil every unfinished run, measure it
against its teacher side by side, and refresh the tables and plots after each run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kdformer import pipeline
from kdformer.config import ModelConfig
from kdformer.devices import resolve_device
from kdformer.families import check_models
from kdformer.models import load_model, load_tokenizer
from kdformer.report import (
    ModelMeasurement,
    build_report,
    measure_latencies,
    measure_loaded,
    write_report,
)
from kdformer.studies.plan import (
    PlannedRun,
    StudyPlan,
    read_json,
    read_teachers,
    validate_plan,
    write_json,
)
from kdformer.studies.plots import plot_bars, plot_scatter
from kdformer.studies.tables import collect_results, summary_markdown, write_runs_csv
from kdformer.tasks.evaluation import evaluate_model
from kdformer.training import latest_checkpoint


def _drop_checkpoints(root: Path) -> None:
    """Remove Trainer checkpoint-N folders (weights, optimiser state) but keep the logs."""
    for folder in root.glob("checkpoints/*/checkpoint-*"):
        shutil.rmtree(folder, ignore_errors=True)


class _Measurer:
    """Evaluates and times models; keeps the current teacher loaded for side-by-side timing."""

    def __init__(self, plan: StudyPlan):
        self.plan = plan
        self.path = plan.output_dir / "teachers.json"
        self.teachers: dict[str, Any] = read_teachers(plan)
        self._loaded: tuple[str, Any, Any, Any] | None = None  # (teacher key, model, tok, task)

    def _teacher(self, run: PlannedRun) -> tuple[Any, Any, Any]:

        key = run.teacher.key + "|" + run.measure_key
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None
            task = self.plan.task(run.config)
            model = pipeline.load_teacher(run.teacher.reference, task)
            self._loaded = (key, model, load_tokenizer(run.teacher.reference), task)
        return self._loaded[1], self._loaded[2], self._loaded[3]

    def teacher(self, run: PlannedRun) -> dict[str, Any]:
        """The teacher's metrics and latency (alone), measured once per teacher and task."""

        key = run.measure_key
        if key not in self.teachers:
            model, tokenizer, task = self._teacher(run)
            reference = run.teacher.reference.name
            path = reference if Path(reference).is_dir() else None
            measured = measure_loaded(
                [("teacher", model, tokenizer, path)],
                task,
                task.load("eval"),
                run.config.report,
                run.config.distill.train.eval_batch_size,
                pad_to=check_models([(model.config, "teacher")], task.config.max_length),
            )[0].to_dict()
            measured.update(
                task=run.task,
                teacher=run.teacher.key,
                main_metric=task.main_metric,
                baseline=self._baseline(run),
                baseline_name=task.baseline_name,
                training=teacher_training(Path(reference)),
            )
            self.teachers[key] = measured
            write_json(self.path, self.teachers)
        return self.teachers[key]

    def _baseline(self, run: PlannedRun) -> dict[str, float] | None:
        """Metrics of the task's trivial predictor (classification: the most frequent label of
        the teacher's training data) on the run's evaluation set."""
        task = self.plan.task(run.config)
        train = self.plan.task(run.teacher.config or run.config).load("train")
        return task.baseline(train, task.load("eval"))

    def baseline(self, run: PlannedRun) -> dict[str, float] | None:
        """The run's trivial baseline, kept with the teacher's measurement (filled in for
        teachers measured before baselines existed)."""
        entry = self.teachers[run.measure_key]
        if "baseline" not in entry:
            entry["baseline"] = self._baseline(run)
            write_json(self.path, self.teachers)
        return entry["baseline"]

    def fill_baselines(self) -> None:
        """Baselines, and the teachers' training records (steps, time, learning curve), for
        teachers measured before the results kept them."""
        for run in self.plan.runs:
            if run.measure_key in self.teachers:
                self.baseline(run)
                entry = self.teachers[run.measure_key]
                if entry.get("training") is None:
                    training = teacher_training(Path(run.teacher.reference.name))
                    if training is not None:
                        entry["training"] = training
                        write_json(self.path, self.teachers)

    def student(self, run: PlannedRun) -> dict[str, Any]:
        """Report of teacher vs student: student metrics, both timed round-robin side by side."""

        teacher_info = self.teacher(run)
        teacher, _, task = self._teacher(run)
        report_cfg = run.config.report
        device = resolve_device(report_cfg.device)
        folder = run.folder / "student"
        reference = ModelConfig(name=str(folder))
        student = load_model(reference, task.model_class)
        tokenizer = load_tokenizer(reference)
        eval_raw = task.load("eval")
        models = [(teacher.config, "teacher"), (student.config, "student")]
        metrics = evaluate_model(
            student,
            task,
            eval_raw,
            tokenizer,
            run.config.distill.train.eval_batch_size,
            device,
            f"evaluate {run.run_id}",
            pad_to=check_models(models, task.config.max_length),
        )
        speeds = measure_latencies(
            [teacher, student],
            report_cfg.latency_batch_size,
            report_cfg.latency_seq_length,
            report_cfg.latency_repeats,
            report_cfg.latency_warmup,
            device,
            task,
        )
        measured = [
            ModelMeasurement.of(
                "teacher", teacher, teacher_info["metrics"], speeds[0], teacher_info["path"]
            ),
            ModelMeasurement.of("student", student, metrics, speeds[1], folder),
        ]
        report = build_report(
            task.name,
            task.main_metric,
            len(eval_raw),
            measured,
            report_cfg,
            baseline=self.baseline(run),
            baseline_name=task.baseline_name,
            higher_is_better=task.higher_is_better,
        )
        report["latency_setup"]["timing"] = "teacher and student timed round-robin, same process"
        write_report(report, run.folder)
        return report


def teacher_training(folder: Path) -> dict[str, Any] | None:
    """How a study's teacher was trained (its ``training.json``): steps, seconds and the
    learning curve with its plateau verdict, so every study figure says how far from converged
    its teacher was. None for a teacher trained elsewhere."""
    record = read_json(folder / "training.json")
    if not isinstance(record, dict):
        return None
    keys = ("steps", "epochs", "train_seconds", "learning_curve")
    return {key: record.get(key) for key in keys}


def _result(run: PlannedRun, report: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    teacher, student = report["models"]
    return {
        "run_id": run.run_id,
        "task": run.task,
        "task_name": report["task"],
        "point": run.point,
        "variant": run.variant,
        "grid": run.grid,
        "seed": run.seed,
        "overrides": run.overrides,
        "main_metric": report["main_metric"],
        "metrics": student["metrics"],
        "teacher_metrics": teacher["metrics"],
        "retention_pct": student["retention_pct"],
        "gain_kept_pct": student["gain_kept_pct"],
        "parameters": student["parameters"],
        "teacher_parameters": teacher["parameters"],
        "param_ratio": student["param_ratio"],
        "latency_ms": student["latency_ms"],
        "latency_p90_ms": student["latency_p90_ms"],
        "teacher_latency_ms": teacher["latency_ms"],
        "speedup": student["speedup"],
        "throughput": student["throughput"],
        "size_mb": student["size_mb"],
        "shape": student["shape"],
        "teacher": run.teacher.key,
        "eval_examples": report["eval_examples"],
        "latency_setup": report["latency_setup"],
        "train_seconds": seconds,
        "config": run.config.model_dump(mode="json"),
    }


def run_study(
    plan: StudyPlan, callbacks: Sequence[Any] = (), validate: bool = True
) -> list[dict[str, Any]]:
    """Run every unfinished run (fine-tuning each shared teacher first, once), writing the run's
    result.json and refreshing runs.csv, summary.md and the plots after each one. ``validate``:
    check every run first (:func:`validate_plan`; pass False when that was just done)."""
    from tqdm.auto import tqdm

    if validate:
        validate_plan(plan)
    study = plan.study
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    (plan.output_dir / "study.yaml").write_text(
        yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    measurer = _Measurer(plan)
    measurer.fill_baselines()
    pending = [r for r in plan.runs if not r.finished]
    write_outputs(plan)
    bar = tqdm(
        total=len(plan.runs),
        initial=len(plan.runs) - len(pending),
        desc=f"study {study.name}",
        unit="run",
        dynamic_ncols=True,
    )
    try:
        for run in pending:
            bar.set_postfix_str(run.run_id)
            bar.write(f"[study {study.name}] run {run.run_id}: {' '.join(run.overrides)}")
            tuned = run.teacher.config
            if tuned is not None and not pipeline.is_finished(tuned.output_dir / "teacher"):
                resume = latest_checkpoint(tuned.output_dir / "checkpoints" / "teacher") is not None
                bar.write(f"[study {study.name}] fine-tuning the shared teacher {run.teacher.key}")
                pipeline.finetune(tuned, resume=resume, callbacks=callbacks, task=plan.task(tuned))
                write_json(
                    tuned.output_dir / "teacher_key.json",
                    {
                        "task": tuned.task.model_dump(mode="json"),
                        "teacher": tuned.teacher.model_dump(mode="json"),
                        "finetune": tuned.finetune.model_dump(mode="json")
                        if tuned.finetune
                        else None,
                        "seed": tuned.seed,
                    },
                )
                if not study.keep_checkpoints:
                    _drop_checkpoints(tuned.output_dir)
            teacher_eval = {
                "metrics": measurer.teacher(run)["metrics"],
                "baseline": measurer.baseline(run),
            }
            resume = latest_checkpoint(run.folder / "checkpoints" / "student") is not None
            student = pipeline.distill(
                run.config,
                resume=resume,
                callbacks=callbacks,
                task=plan.task(run.config),
                teacher_eval=teacher_eval,
            )
            # The training record sums the seconds over resumed runs; timing this call would
            # count only the part after the last interruption.
            record = json.loads((student / "training.json").read_text(encoding="utf-8"))
            report = measurer.student(run)
            result = _result(run, report, record.get("train_seconds"))
            write_json(run.result_path, result)
            if run.published is not None:
                write_json(run.published, result)
            if not study.keep_checkpoints:
                _drop_checkpoints(run.folder)
            write_outputs(plan)
            bar.update(1)
    finally:
        bar.close()
    return collect_results(plan)


def write_outputs(plan: StudyPlan) -> list[Path]:
    """runs.csv, summary.md and the plots from the finished runs so far."""
    out = plan.output_dir
    out.mkdir(parents=True, exist_ok=True)
    results = collect_results(plan)
    written = [out / "runs.csv", out / "summary.md"]
    write_runs_csv(plan, results, written[0])
    scratch = out / "summary.md.tmp"
    scratch.write_text(summary_markdown(plan, results), encoding="utf-8")
    scratch.replace(written[1])
    if plot_bars(plan, results, out / "bars.png"):
        written.append(out / "bars.png")
    if plan.study.plot.scatter and plot_scatter(plan, results, out / "retention_vs_speedup.png"):
        written.append(out / "retention_vs_speedup.png")
    published = plan.study.results_dir
    if published is not None:
        published.mkdir(parents=True, exist_ok=True)
        for path in [*written, out / "teachers.json", out / "study.yaml"]:
            if path.is_file():
                shutil.copyfile(path, published / path.name)
    return written
