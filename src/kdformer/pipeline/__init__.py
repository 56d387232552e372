"""The workflows behind the CLI: fine-tune a teacher, distill a student, evaluate both.

Layout of ``output_dir``::

    config.yaml             the resolved config of the last run
    teacher/                fine-tuned teacher (only when `finetune:` is set)
    teacher_eval.json       the teacher's metrics and the task's trivial baseline (the check
                            that the teacher learnt something, reused by the report)
    general/                two-stage runs: the task-agnostic stage (its own student/, ...)
    student/                distilled student + tokenizer + README.md model card + report
    one_stage/              two-stage runs: the one-stage student at the same compute
    checkpoints/<stage>/    resumable Trainer checkpoints (and TensorBoard logs under runs/)
    report.json, report.md  teacher vs student(s)

Safety rules: everything that can be checked cheaply (config, data files, labels, lengths,
model shapes, tokenizers) is checked before any training starts; a teacher that does not beat
the task's trivial baseline stops distillation before it starts; a finished ``teacher/`` or
``student/`` is skipped unless ``overwrite``, and even then is replaced only once the new one
is saved; a run whose loss or weights become non-finite stops with its last good checkpoint
kept and nothing saved or scored; leftover checkpoints of an interrupted run are never
silently discarded.

Modules, one stage each: ``validation`` (everything checked before training),
``conversion_stage``, ``finetuning``, ``distillation`` (distill, general, one_stage),
``evaluation`` (the report), ``stages`` (the stage list and ``run``); beside them ``teachers``
(loading and checking the teacher, its signal), ``two_stage`` (the configs of a two-stage run),
``outputs`` (the folder layout, finished-model checks, atomic saves), ``budget`` (the memory
estimate), ``plan`` (``--dry-run``), ``export`` (``kdformer export``).
"""

from kdformer.pipeline.conversion_stage import convert_teacher
from kdformer.pipeline.distillation import distill, general, one_stage
from kdformer.pipeline.evaluation import evaluate, measure_models
from kdformer.pipeline.finetuning import finetune
from kdformer.pipeline.outputs import Paths, is_finished, save_atomically
from kdformer.pipeline.stages import default_stages, run
from kdformer.pipeline.teachers import (
    check_teacher,
    evaluate_teacher,
    head_missing_keys,
    load_teacher,
    teacher_reference,
)
from kdformer.pipeline.two_stage import (
    general_config,
    matched_steps,
    one_stage_config,
    task_stage_config,
)
from kdformer.pipeline.validation import STAGES, Stage, validate

__all__ = [
    "STAGES",
    "Paths",
    "Stage",
    "convert_teacher",
    "default_stages",
    "check_teacher",
    "distill",
    "evaluate",
    "evaluate_teacher",
    "finetune",
    "general",
    "general_config",
    "head_missing_keys",
    "is_finished",
    "load_teacher",
    "matched_steps",
    "measure_models",
    "one_stage",
    "one_stage_config",
    "run",
    "save_atomically",
    "task_stage_config",
    "teacher_reference",
    "validate",
]
