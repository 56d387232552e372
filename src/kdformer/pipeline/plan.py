"""``kdformer distill --dry-run``: what a distillation would do, without training.

The matched layers and the modules each knowledge term reads, the projections and their
sizes, parameter counts, and a measured step time and memory growth (next to the estimate the
validation prints, :mod:`kdformer.pipeline.budget`): models of the planned
shapes (random weights: the cost is the same) run three steps on a real batch of the task.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import torch

from kdformer.config import ExperimentConfig
from kdformer.features import extract_features, resolve_layer_modules
from kdformer.models import count_parameters, load_tokenizer
from kdformer.pipeline.budget import with_head
from kdformer.pipeline.conversion_stage import source_teacher_config
from kdformer.pipeline.teachers import teacher_reference
from kdformer.pipeline.two_stage import task_stage_config
from kdformer.pipeline.validation import (
    build_objective,
    distill_model_configs,
    distill_pad_length,
    validate,
)


def distill_plan(config: ExperimentConfig) -> list[str]:
    """The plan as printable lines (validates the config first, as a run would)."""

    config = task_stage_config(config)
    stages = ["finetune", "distill"] if config.finetune is not None else ["distill"]
    task = validate(config, stages)  # type: ignore[arg-type]
    teacher_cfg = source_teacher_config(config)
    student_cfg, others = distill_model_configs(config, teacher_cfg)
    pad_to = distill_pad_length(task, teacher_cfg, student_cfg, others)
    objective = build_objective(config, task, teacher_cfg, student_cfg, others)
    teacher_cfg = with_head(teacher_cfg, task.model_kwargs())
    student_cfg = with_head(student_cfg, task.model_kwargs())
    torch.manual_seed(0)
    teacher = task.model_class.from_config(teacher_cfg).eval()
    student = task.model_class.from_config(student_cfg).train()
    teacher_params, student_params = count_parameters(teacher), count_parameters(student)

    lines = [
        f"dry run: {config.teacher.name} ({teacher_cfg.num_hidden_layers} x "
        f"{teacher_cfg.hidden_size}, {teacher_params / 1e6:.1f}M parameters) -> student "
        f"({student_cfg.num_hidden_layers} x {student_cfg.hidden_size}, "
        f"{student_params / 1e6:.1f}M, init {config.student.init}) on {task.describe_data()}",
        "knowledge terms:",
    ]
    for name, term in objective.terms.items():
        target = objective.targets[name]
        groups = getattr(term, "groups", None)
        matched = (
            ", ".join(
                f"student L{g.student} <- teacher L{'+'.join(str(t) for t in g.teachers)}"
                for g in groups
            )
            if groups
            else "the task outputs"
        )
        modules = sorted(
            resolve_layer_modules(student, term.needs_for("student").layer_modules).values()
        )
        teacher_modules = sorted(
            resolve_layer_modules(teacher, term.needs_for("teacher").layer_modules).values()
        ) if target in ("main", "all") else []  # fmt: skip
        trainable = count_parameters(term)
        lines.append(
            f"  {name} (x{term.config.weight}, teacher {target}): {matched}; "
            + (f"student modules {modules}; " if modules else "")
            + (f"teacher modules {teacher_modules}; " if teacher_modules else "")
            + (
                f"projections/mixers {trainable:,} parameters"
                if trainable
                else "no trainable projection"
            )
        )
    hard = objective.current_hard_label_weight if objective.uses_hard_labels else 0
    lines.append(f"  hard labels x{hard}")
    train = config.distill.train
    if others:  # each teacher's features would be needed: not measured
        lines.append(f"parameters: teacher {teacher_params:,}; student {student_params:,}")
        lines.append("step time and memory: not measured with several teachers")
        return lines
    seconds, activation_bytes = _time_steps(config, task, teacher, student, objective, pad_to)
    steps = train.max_steps or int(
        train.epochs * -(-len(task.distillation_examples()) // train.batch_size)
    )
    lines += [
        f"parameters: teacher {teacher_params:,}; student {student_params:,}; objective "
        f"{count_parameters(objective):,}",
        f"step time: {seconds:.3f} s/step measured (batch {train.batch_size}, median of 2 "
        f"after a warm-up, this machine); {steps:,} steps ~ {steps * seconds / 60:.1f} min",
        f"memory measured: the steps added {activation_bytes / 2**20:,.0f} MiB of resident "
        "memory (activations, gradients, AdamW state); the memory estimate printed above is "
        "what training is checked against",
    ]
    return lines


def _time_steps(
    config: ExperimentConfig,
    task: Any,
    teacher: Any,
    student: Any,
    objective: Any,
    pad_to: int | None = None,
) -> tuple[float, int]:
    """Seconds per training step (median of two after one warm-up) and the resident memory
    the steps added (activations, gradients and optimiser state at their peak), on a batch
    padded as training pads it (``pad_to``: the run's one batch length)."""

    tokenizer = load_tokenizer(config.teacher if config.finetune else teacher_reference(config))
    size = config.distill.train.batch_size
    examples = task.distillation_examples()
    sample = examples.select(range(min(len(examples), size)))
    features = task.model_features(task.tokenize(sample, tokenizer, "train"))
    collate = task.collator(tokenizer, "train", pad_to)
    batch = collate([features[i] for i in range(len(features))][:size])
    batch = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    parameters = list(student.parameters()) + list(objective.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with torch.no_grad():
            teacher_features = extract_features(teacher, batch, objective.needs_for("teacher"))
        student_features = extract_features(student, batch, objective.needs_for("student"))
        objective(student_features, teacher_features, batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return statistics.median(times[1:]), max(0, after - before)
