"""Turning measurements into the report: retention and speed-up against a reference model."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from kdformer.config import ReportConfig
from kdformer.devices import resolve_device
from kdformer.report.measure import ModelMeasurement


def teacher_gain_is_clear(value: float, floor: float, share: float) -> bool:
    """Whether a reference model at ``value`` beats a trivial baseline at ``floor`` by at least
    ``share`` of the headroom up to a perfect score of 1 (metrics on a 0..1 scale)."""
    return value > floor and value - floor >= share * (1.0 - floor)


def build_report(
    task: str,
    main_metric: str | None,
    eval_examples: int,
    models: list[ModelMeasurement],
    report: ReportConfig,
    reference: str = "teacher",
    baseline: dict[str, float] | None = None,
    baseline_name: str = "trivial baseline",
    higher_is_better: bool = True,
    columns: list[str] | None = None,
) -> dict[str, Any]:
    """Report dict: per-model figures plus retention (% of reference metric), share of the
    reference's gain over the task's trivial ``baseline`` kept, speed-up and size ratios against
    the ``reference`` model (the first one if no model has that name). ``columns``: the
    metrics the tables show (all when unset; the JSON always has every metric).

    Retention is marked meaningless (``retention_meaningful: false`` and a ``warning``) when
    the reference does not beat the baseline by ``report.min_teacher_gain`` of the headroom:
    a student of a teacher that learnt nothing can "retain" 300%."""
    ref = next((m for m in models if m.name == reference), models[0])
    floor = baseline.get(main_metric) if baseline and higher_is_better else None
    top = ref.metrics.get(main_metric)
    meaningful, warning = True, None
    if (
        floor is not None
        and top is not None
        and not teacher_gain_is_clear(top, floor, report.min_teacher_gain)
    ):
        meaningful = False
        warning = (
            f"retention is meaningless: the {ref.name} ({100 * top:.2f} {main_metric}) does not "
            f"beat the {baseline_name} baseline ({100 * floor:.2f}) by "
            f"{report.min_teacher_gain:.0%} of the headroom to a perfect score"
        )
    rows = []
    for m in models:
        ref_value, value = ref.metrics.get(main_metric), m.metrics.get(main_metric)
        row = m.to_dict()
        row["retention_pct"] = (
            100 * value / ref_value
            if ref_value and value is not None and higher_is_better
            else None
        )
        row["gain_kept_pct"] = gain_kept_pct(value, ref_value, floor)
        row["speedup"] = ref.latency_ms / m.latency_ms if m.latency_ms else None
        row["param_ratio"] = m.parameters / ref.parameters
        row["latency_reduction_pct"] = 100 * (1 - m.latency_ms / ref.latency_ms)
        rows.append(row)
    device = resolve_device(report.device)
    return {
        "task": task,
        "main_metric": main_metric,
        "eval_examples": eval_examples,
        "reference": ref.name,
        "baseline": {"name": baseline_name, "metrics": baseline} if baseline else None,
        "columns": columns,
        "retention_meaningful": meaningful,
        "warning": warning,
        "latency_setup": {
            "batch_size": report.latency_batch_size,
            "seq_length": report.latency_seq_length,
            "repeats": report.latency_repeats,
            "warmup": report.latency_warmup,
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "torch": torch.__version__,
        },
        "models": rows,
    }


def gain_kept_pct(
    value: float | None, reference: float | None, floor: float | None
) -> float | None:
    """100 x (value - floor) / (reference - floor): the share of the reference model's gain over
    the baseline that a model keeps; None when any is missing or the reference does not beat the
    baseline (then there is no gain to keep)."""
    if value is None or reference is None or floor is None or reference - floor <= 1e-9:
        return None
    return 100 * (value - floor) / (reference - floor)


def _fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def compares(report: dict[str, Any]) -> bool:
    """Whether the report has a model besides its reference: without one (``kdformer
    evaluate`` with no ``--reference``) the reference is the model itself, and its retention,
    gain kept and speed-up (100%, 100%, 1.00x) say nothing, so the tables leave them out."""
    return any(row["name"] != report["reference"] for row in report["models"])


def _warning_text(report: dict[str, Any]) -> str | None:
    """The report's warning; without a comparison only what it says about the model itself."""
    warning = report.get("warning")
    if warning and not compares(report):
        return warning.removeprefix("retention is meaningless: ")
    return warning


def _table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    compared = compares(report)
    metric_names: list[str] = []
    for row in report["models"]:
        metric_names += [k for k in row["metrics"] if k not in metric_names]
    if report.get("columns"):
        metric_names = [k for k in report["columns"] if k in metric_names]
    baseline = (report.get("baseline") or {}).get("metrics")
    memory = any(row.get("memory_mib") is not None for row in report["models"])
    header = [
        "model",
        "layers x hidden",
        *metric_names,
        *([f"% of {report['reference']}"] if compared else []),
        *(["% of gain"] if baseline and compared else []),
        "params M",
        "MB",
        *(["peak MiB"] if memory else []),
        "ms/batch",
        *(["speed-up"] if compared else []),
        "ex/s",
    ]
    body = []
    flag = "" if report.get("retention_meaningful", True) else " (!)"
    for row in report["models"]:
        shape = row["shape"]
        body.append(
            [
                row["name"],
                f"{shape.get('layers')} x {shape.get('hidden')}",
                *[
                    _fmt(100 * row["metrics"][k], 2) if k in row["metrics"] else "-"
                    for k in metric_names
                ],
                *(
                    [_fmt(row["retention_pct"], 1, "%") + (flag if row["retention_pct"] else "")]
                    if compared
                    else []
                ),
                *([_fmt(row.get("gain_kept_pct"), 1, "%")] if baseline and compared else []),
                _fmt(row["parameters"] / 1e6, 1),
                _fmt(row["size_mb"], 1),
                *([_fmt(row.get("memory_mib"), 0)] if memory else []),
                _fmt(row["latency_ms"], 1),
                *([_fmt(row["speedup"], 2, "x")] if compared else []),
                _fmt(row["throughput"], 0),
            ]
        )
    if baseline:
        cells = [_fmt(100 * baseline[k], 2) if k in baseline else "-" for k in metric_names]
        name = (report.get("baseline") or {}).get("name", "trivial baseline")
        body.append([name, "-", *cells, *["-"] * (len(header) - 2 - len(cells))])
    return header, body


def to_markdown(report: dict[str, Any]) -> str:
    header, body = _table_rows(report)
    setup = report["latency_setup"]
    metric_line = (
        f"Metric: **{report['main_metric']}** (x100) on {report['eval_examples']} evaluation examples; "
        f"retention and speed-up relative to **{report['reference']}**."
        + (
            f" % of gain: the share of the {report['reference']}'s gain over the "
            f"{report['baseline']['name']} baseline that a model keeps."
            if (report.get("baseline") or {}).get("metrics")
            else ""
        )
        if compares(report)
        else f"Metric: **{report['main_metric']}** (x100) on {report['eval_examples']} "
        "evaluation examples; no reference model, so no retention or speed-up."
    )
    if report["main_metric"] is None:
        metric_line = (
            "No task metric: the models are bare encoders (see the held-out distillation loss "
            "below); speed-up relative to the teacher."
        )
    lines = [
        f"# kdformer report: {report['task']}",
        "",
        metric_line,
        "",
        *(
            [
                f"**Warning: {_warning_text(report)}.**"
                + (" Retention figures marked (!) say nothing." if compares(report) else ""),
                "",
            ]
            if report.get("warning")
            else []
        ),
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in body),
        "",
        f"Latency: median of {setup['repeats']} forward passes (after {setup['warmup']} warm-up) "
        f"of a {setup['batch_size']} x {setup['seq_length']} batch on {setup['device']} "
        f"({setup['torch_threads']} torch threads, torch {setup['torch']}).",
    ]
    if any(row.get("memory_mib") is not None for row in report["models"]):
        lines.append(
            "Peak MiB: resident memory of serving a model (its weights and one forward of that "
            "batch, on the CPU), each in a fresh process; the interpreter and libraries left out."
        )
    exported = [row for row in report["models"] if row.get("export")]
    for row in exported:
        info = row["export"]
        lines.append(
            f"{row['name']}: {info['file']} run by ONNX Runtime {info['onnxruntime']} (CPU); "
            f"largest output difference from the PyTorch student {info['max_abs_diff']:.2g}"
            + (
                f", same prediction at {100 * info['agreement']:.1f}% of the check batches' "
                "positions (random tokens)"
                if info.get("agreement") is not None
                else ""
            )
            + "."
        )
    held_out = report.get("held_out")
    if held_out:
        terms = ", ".join(f"{k} {v:.4f}" for k, v in held_out.items())
        lines += ["", f"Student's held-out distillation loss (evaluation text): {terms}."]
    two_stage = report.get("two_stage")
    if two_stage:
        lines += [
            "",
            f"Two-stage: the general stage processed {two_stage['general_tokens']:,} tokens in "
            f"{two_stage['general_steps']} steps and the task stage {two_stage['task_tokens']:,} "
            f"in {two_stage['task_steps']}; the one-stage student trained "
            f"{two_stage['one_stage_steps']} task steps, as many tokens as both stages together.",
        ]
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    header, body = _table_rows(report)
    table = Table(title=f"kdformer report: {report['task']} ({report['main_metric']} x100)")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in body:
        table.add_row(*row)
    out = console or Console(width=max(Console().width, 120))
    out.print(table)
    if report.get("warning"):
        out.print(
            f"[bold yellow]warning:[/] {_warning_text(report)}"
            + ("; retention marked (!) says nothing." if compares(report) else ".")
        )


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(report), encoding="utf-8")
    return json_path, md_path
