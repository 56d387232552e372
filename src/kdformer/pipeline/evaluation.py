"""The evaluate stage: teacher, student(s) and exported students measured on the task into the
cost/quality report, the model card updated."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdformer.config import ConfigError, ExperimentConfig, ModelConfig, ReportConfig, dump_config
from kdformer.devices import resolve_device
from kdformer.export.onnx import OnnxModel
from kdformer.families import check_models
from kdformer.models import load_model_config, load_tokenizer
from kdformer.pipeline.export import export_record, exported_models
from kdformer.pipeline.outputs import Paths, console, is_finished
from kdformer.pipeline.teachers import load_task_model, teacher_fingerprint, teacher_reference
from kdformer.report import build_report, measure_loaded, print_report, write_report
from kdformer.report.card import write_model_card
from kdformer.report.measure import check_latency_length
from kdformer.tasks import DataError, Task, TaskSection, build_task


def measure_models(
    models: Sequence[tuple[str, str | Path]],
    task_config: TaskSection,
    report: ReportConfig,
    seed: int = 42,
    eval_batch_size: int = 128,
    trust_remote_code: bool = False,
    task: Task | None = None,
    known: dict[str, dict[str, float]] | None = None,
    extra: Sequence[tuple[str, Any, Any, Path]] = (),
    pad_to: int | None = None,
) -> dict[str, Any]:
    """Evaluate and time each (name, model folder or hub name) side by side on the eval set.
    ``known``: metrics already measured for some names (the teacher's, from its check);
    ``extra``: (name, model, tokenizer, path) already built (exported students); ``pad_to``:
    the run's one batch length, when its models' family needs one."""
    task = task or build_task(task_config, seed)
    for _, source in models:  # every model's positions, before any is scored
        model_config = load_model_config(
            ModelConfig(name=str(source), trust_remote_code=trust_remote_code)
        )
        task.check_lengths(model_config, str(source))
        check_latency_length(report.latency_seq_length, model_config, str(source))
    if models:
        first = ModelConfig(name=str(models[0][1]), trust_remote_code=trust_remote_code)
        task.adapt_to_teacher(load_model_config(first))
    eval_raw = task.load("eval")
    loaded = []
    for name, source in models:
        reference = ModelConfig(name=str(source), trust_remote_code=trust_remote_code)
        model = load_task_model(
            reference,
            task,
            "model",
            "Its scores would be those of random weights; evaluate a model trained for this task",
        )
        path = source if Path(str(source)).is_dir() else None
        loaded.append((name, model, load_tokenizer(reference), path))
    loaded += extra
    measurements = measure_loaded(loaded, task, eval_raw, report, eval_batch_size, known, pad_to)
    try:
        baseline = task.baseline(task.load("train"), eval_raw)
    except DataError:  # an evaluation-only setup may have no training split
        baseline = None
    return build_report(
        task.name,
        task.main_metric,
        len(eval_raw),
        measurements,
        report,
        baseline=baseline,
        baseline_name=task.baseline_name,
        higher_is_better=task.higher_is_better,
        columns=list(task.table_metrics) if task.table_metrics else None,
    )


def exported_rows(
    student: Path, name: str, report: ReportConfig
) -> list[tuple[str, Any, Any, Path, dict[str, Any]]]:
    """The student's current ONNX export as report rows (name, model, tokenizer, file,
    details), when there is one and the report runs on the CPU (ONNX Runtime's device here)."""
    from transformers import AutoConfig

    files = exported_models(student)
    if not files:
        return []
    if resolve_device(report.device).type != "cpu":
        console.print(
            f"[yellow]the ONNX export in {student} runs on the CPU: its rows are measured by "
            "`kdformer export` (or with report.device=cpu)[/]"
        )
        return []
    record = export_record(student)
    config = AutoConfig.from_pretrained(str(student))
    tokenizer = load_tokenizer(str(student))
    rows = []
    for suffix, path in files:
        details = {
            "file": f"{student.name}/{path.parent.name}/{path.name}",
            "onnxruntime": record["versions"]["onnxruntime"],
            "max_abs_diff": record["max_abs_diff" if suffix == "onnx" else "int8_max_abs_diff"],
            "agreement": None if suffix == "onnx" else record.get("int8_agreement"),
        }
        model = OnnxModel(path, config, record["parameters"])
        rows.append((f"{name} ({suffix})", model, tokenizer, path, details))
    return rows


def run_pad_length(
    config: ExperimentConfig, task: Task, models: Sequence[tuple[str, str | Path]]
) -> int | None:
    """The finished run's one batch length (see :func:`distill_pad_length`), from the configs
    of its measured ``models`` (name, folder or hub name): the report evaluates them as the
    run trained them, whether it runs as the last stage or later on its own."""
    remote = config.teacher.trust_remote_code
    configs = [
        (load_model_config(ModelConfig(name=str(source), trust_remote_code=remote)), name)
        for name, source in models
    ]
    return check_models(configs, task.config.max_length)


def evaluate(config: ExperimentConfig, task: Task | None = None) -> dict[str, Any]:
    """Teacher vs student (and, for two-stage runs, the one-stage student) report; written next
    to the student and printed."""
    paths = Paths(config.output_dir)
    if not is_finished(paths.student):
        raise ConfigError(f"no distilled student in {paths.student}: run `kdformer distill` first")
    task = task or build_task(config.task, config.seed)
    two_stage = is_finished(paths.one_stage / "student")
    models: list[tuple[str, str | Path]] = [
        ("teacher", teacher_reference(config).name),
        ("two-stage student" if two_stage else "student", paths.student),
    ]
    if two_stage:
        models.append(("one-stage student", paths.one_stage / "student"))
    models += [(f"teacher {t.id}", t.name) for t in config.distill.teachers]
    known = {}
    stored = paths.root / "teacher_eval.json"
    if stored.is_file():
        entry = json.loads(stored.read_text(encoding="utf-8"))
        if entry.get("fingerprint") == teacher_fingerprint(teacher_reference(config), config.task):
            known["teacher"] = entry["metrics"]
    exported = exported_rows(paths.student, models[1][0], config.report)
    report = measure_models(
        models,
        config.task,
        config.report,
        config.seed,
        config.distill.train.eval_batch_size,
        config.teacher.trust_remote_code,
        task,
        known,
        [row[:4] for row in exported],
        run_pad_length(config, task, models),
    )
    details = {row[0]: row[4] for row in exported}
    for row in report["models"]:
        row["export"] = details.get(row["name"])
    held_out = paths.student / "held_out.json"
    if held_out.is_file():
        report["held_out"] = json.loads(held_out.read_text(encoding="utf-8"))
    compute = paths.one_stage / "compute.json"
    if compute.is_file():
        report["two_stage"] = json.loads(compute.read_text(encoding="utf-8"))
    write_report(report, config.output_dir)
    write_report(report, paths.student)
    write_model_card(
        paths.student, dump_config(config), config.teacher.name, report,
        task.model_class.__name__, task.card_dataset(), task.pipeline_tag,
        [row[4]["file"] for row in exported], task=task,
    )  # fmt: skip
    print_report(report)
    return report
