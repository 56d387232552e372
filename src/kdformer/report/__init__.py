"""Cost/quality measurement of teacher and student, rendered as JSON, Markdown and a table."""

from kdformer.report.measure import (
    ModelMeasurement,
    check_finite,
    measure_latencies,
    measure_latency,
    measure_loaded,
    size_on_disk_mb,
)
from kdformer.report.render import (
    build_report,
    gain_kept_pct,
    print_report,
    to_markdown,
    write_report,
)

__all__ = [
    "ModelMeasurement",
    "build_report",
    "gain_kept_pct",
    "measure_latencies",
    "measure_latency",
    "measure_loaded",
    "check_finite",
    "print_report",
    "size_on_disk_mb",
    "to_markdown",
    "write_report",
]
