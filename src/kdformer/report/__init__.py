"""Cost/quality measurement of teacher and student, rendered as JSON, Markdown and a table."""

from kdformer.report.measure import (
    ModelMeasurement,
    evaluate_model,
    measure_latencies,
    measure_latency,
    measure_models,
    predict,
    resolve_device,
    size_on_disk_mb,
)
from kdformer.report.render import build_report, print_report, to_markdown, write_report

__all__ = [
    "ModelMeasurement",
    "build_report",
    "evaluate_model",
    "measure_latencies",
    "measure_latency",
    "measure_models",
    "predict",
    "print_report",
    "resolve_device",
    "size_on_disk_mb",
    "to_markdown",
    "write_report",
]
