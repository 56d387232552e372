"""The stage list and :func:`run`: every configured stage in order (finetune, general, distill
and the one-stage comparison, evaluate), validated first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdformer import distributed
from kdformer.config import ExperimentConfig
from kdformer.pipeline.distillation import distill, general, one_stage
from kdformer.pipeline.evaluation import evaluate
from kdformer.pipeline.export import export_model
from kdformer.pipeline.finetuning import finetune
from kdformer.pipeline.outputs import Paths
from kdformer.pipeline.validation import STAGES, Stage, validate


def default_stages(config: ExperimentConfig) -> list[Stage]:
    """The stages a run config asks for: finetune and general only when configured."""
    return [
        s
        for s in STAGES
        if (s != "finetune" or config.finetune is not None)
        and (s != "general" or config.general is not None)
    ]


def run(
    config: ExperimentConfig,
    stages: Sequence[Stage] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any] | None:
    """Run the pipeline: finetune (when configured), general (two-stage runs), distill (and the
    one-stage comparison), evaluate."""
    if stages is None:
        stages = default_stages(config)
    task = validate(config, stages)
    if "finetune" in stages:
        finetune(config, overwrite, resume, callbacks, task)
    if "general" in stages:
        general(config, overwrite, resume, callbacks)
    if "distill" in stages:
        distill(config, overwrite, resume, callbacks, task)
        if config.general is not None and config.general.compare_one_stage:
            one_stage(config, overwrite, resume, callbacks, task)
    if "evaluate" in stages and distributed.is_main():  # one process measures and reports
        if config.export.enabled:
            export = config.export
            export_model(Paths(config.output_dir).student, export.quantize, export.opset,
                         export.atol, task=task)  # fmt: skip
        return evaluate(config, task)
    return None
