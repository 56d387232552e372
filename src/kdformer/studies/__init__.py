"""Studies: many distillation runs from one YAML file, sharing teachers, resumable, summarised.

A study file names a ``base`` experiment config, optional ``overrides`` of it, optional ``tasks``
(label -> overrides), optional hand-picked ``variants`` (name -> overrides), a ``grid`` (dotted
config field -> values; cartesian product) and ``seeds``. Every run is
``tasks x seeds x variants x grid`` applied to the base, in that order of precedence::

    base <- overrides <- tasks[label] <- variants[i].overrides <- grid values <- seed

Layout of ``output_dir``::

    runs/<run-id>/          one pipeline output folder per run (student/, report.json, ...)
    runs/<run-id>/result.json   written last: its presence marks the run as finished
    teachers/<task>-<hash>/ the task-fine-tuned teacher shared by every run with the same task,
                            teacher and finetune settings (unless ``teachers_dir`` moves it)
    teachers.json           each teacher's metrics and latency, measured once
    runs.csv, summary.md    one row per finished run; mean +- std over seeds per point
    bars.png                one panel per task, error bars over seeds
    retention_vs_speedup.png    when ``plot.scatter`` is on

``base`` is resolved relative to the study file; every other path (output_dir, teachers_dir, the
base's data_dir) relative to the directory kdformer runs in, as in experiment confi

Modules, in the order a study goes through them: ``config`` (the study file), ``plan`` (every
run's config and status, validated up front), ``runner`` (teachers, runs, measurements),
``tables`` (runs.csv, summary.md) and ``plots``.
"""

from kdformer.config.study import (
    PlotConfig,
    StudyConfig,
    VariantConfig,
    load_study,
    override_list,
)
from kdformer.studies.plan import (
    RESULT_FILE,
    PlannedRun,
    StudyPlan,
    TeacherPlan,
    describe_plan,
    plan_lines,
    plan_study,
    run_status,
    validate_plan,
)
from kdformer.studies.plots import plot_bars, plot_scatter
from kdformer.studies.runner import run_study, write_outputs
from kdformer.studies.tables import collect_results, summarise, summary_markdown, write_runs_csv

__all__ = [
    "RESULT_FILE",
    "PlannedRun",
    "PlotConfig",
    "StudyConfig",
    "StudyPlan",
    "TeacherPlan",
    "VariantConfig",
    "collect_results",
    "describe_plan",
    "load_study",
    "override_list",
    "plan_lines",
    "plan_study",
    "plot_bars",
    "plot_scatter",
    "run_status",
    "run_study",
    "summarise",
    "summary_markdown",
    "validate_plan",
    "write_outputs",
    "write_runs_csv",
]
