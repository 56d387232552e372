"""``kdformer distill --dry-run``: what a distillation would do, without training.

The matched layers and the modules each knowledge term reads, the projections and their
sizes, parameter counts, and a measured step time and memory growth (next to the estimate the
validation prints, :mod:`kdformer.pipeline.budget`): models of the planned
shapes (random weights: the cost is the same) run four steps on a real batch of the task, the
teacher's forward and the student's step timed apart. With the teacher cache on
(``distill.cache``) the run's time is the cache fill (the teacher's forward over the training
data, once) plus steps that read the teacher's outputs from the cache (the student's forward,
backward and optimiser step alone), and both parts are printed. A student with its own
vocabulary (``student.vocabulary``) is planned with it: its embeddings have its rows, and the
timed batch is cross-tokenised as training tokenises it (the teacher reads its own tokens).
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from kdformer.alignment import CrossTokenizerCollator, teacher_inputs
from kdformer.config import ExperimentConfig
from kdformer.features import FeatureNeeds, extract_features, resolve_layer_modules
from kdformer.models import count_parameters, load_tokenizer
from kdformer.pipeline.budget import with_head
from kdformer.pipeline.conversion_stage import source_teacher_config
from kdformer.pipeline.cross_tokenizer import own_tokenizer
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
    tokenizer = load_tokenizer(config.teacher if config.finetune else teacher_reference(config))
    own = own_tokenizer(config, task, tokenizer, keep=False)  # written by the run only
    if own is not None:  # the student's embeddings have its vocabulary's rows
        student_cfg.vocab_size = len(own)
        student_cfg.pad_token_id = own.pad_token_id
    torch.manual_seed(0)
    teacher = task.model_class.from_config(teacher_cfg).eval()
    student = task.model_class.from_config(student_cfg).train()
    teacher_params, student_params = count_parameters(teacher), count_parameters(student)

    lines = [
        f"dry run: {config.teacher.name} ({teacher_cfg.num_hidden_layers} x "
        f"{teacher_cfg.hidden_size}, {teacher_params / 1e6:.1f}M parameters) -> student "
        f"({student_cfg.num_hidden_layers} x {student_cfg.hidden_size}, "
        f"{student_params / 1e6:.1f}M, init {config.student.init}) on {task.describe_data()}",
    ]
    if own is not None:
        lines.append(
            f"student vocabulary: {len(own):,} tokens of its own (the teacher's: "
            f"{len(tokenizer):,}); knowledge aligned on units (docs/vocabulary.md)"
        )
    lines.append("knowledge terms:")
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
    timing = _time_steps(task, tokenizer, own, teacher, student, objective, config, pad_to)
    examples = len(task.distillation_examples())
    steps = train.max_steps or int(train.epochs * -(-examples // train.batch_size))
    cached = config.distill.cache.enabled and objective.needs_for("teacher") != FeatureNeeds()
    lines += [
        f"parameters: teacher {teacher_params:,}; student {student_params:,}; objective "
        f"{count_parameters(objective):,}",
        *time_lines(timing, steps, examples, train.batch_size, cached),
        f"memory measured: the steps added {timing.activation_bytes / 2**20:,.0f} MiB of "
        "resident memory (activations, gradients, AdamW state); the memory estimate printed "
        "above is what training is checked against",
    ]
    return lines


@dataclass
class StepTiming:
    """Seconds of one training step measured on one batch of ``batch_rows`` inputs."""

    teacher_seconds: float  # the teacher's forward (no gradients)
    student_seconds: float  # the student's forward and backward, the loss, the optimiser step
    batch_rows: int
    activation_bytes: int = 0

    @property
    def live_seconds(self) -> float:
        """A step with the live teacher: its forward, then the student's step."""
        return self.teacher_seconds + self.student_seconds


def duration(seconds: float) -> str:
    """'98 s' below two minutes, else '6.5 min'."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def time_lines(
    timing: StepTiming, steps: int, examples: int, batch_size: int, cached: bool
) -> list[str]:
    """The time estimate of ``steps`` training steps over ``examples`` training inputs. With
    the teacher cache (``cached``): the fill, one teacher forward over every input, once, plus
    steps that read the teacher's outputs (the student's step alone); both printed, and the
    live-teacher alternative for comparison."""
    measured = f"batch {batch_size}, median of 3 after a warm-up, this machine"
    if not cached:
        total = steps * timing.live_seconds
        return [
            f"step time: {timing.live_seconds:.3f} s/step measured (teacher forward "
            f"{timing.teacher_seconds:.3f} + student step {timing.student_seconds:.3f}; "
            f"{measured}); {steps:,} steps ~ {duration(total)}"
        ]
    per_input = timing.teacher_seconds / max(1, timing.batch_rows)
    fill = per_input * examples
    train = steps * timing.student_seconds
    return [
        f"step time: {timing.student_seconds:.3f} s/step measured with the teacher's outputs "
        f"read from the cache (the student's forward, backward and optimiser step; "
        f"{measured}); {steps:,} steps ~ {duration(train)}",
        f"teacher cache fill: one teacher forward over the {examples:,} training inputs, once "
        f"({timing.teacher_seconds:.3f} s per batch of {timing.batch_rows} measured) ~ "
        f"{duration(fill)}; nothing when the cache already holds this teacher on this data",
        f"time estimate: ~ {duration(fill + train)} = cache fill {duration(fill)} + "
        f"{steps:,} steps {duration(train)} (with the live teacher, distill.cache: false: "
        f"{timing.live_seconds:.3f} s/step, ~ {duration(steps * timing.live_seconds)})",
    ]


def _time_steps(
    task: Any,
    tokenizer: Any,
    own: Any | None,
    teacher: Any,
    student: Any,
    objective: Any,
    config: ExperimentConfig,
    pad_to: int | None = None,
) -> StepTiming:
    """The teacher's forward and the student's step timed apart (median of three after one
    warm-up), and the resident memory the steps added (activations, gradients and optimiser
    state at their peak), on a batch padded as training pads it (``pad_to``: the run's one
    batch length); with the student's own tokenizer ``own``, cross-tokenised as training does."""

    size = config.distill.train.batch_size
    examples = task.distillation_examples()
    sample = examples.select(range(min(len(examples), size)))
    if own is None:
        features = task.model_features(task.tokenize(sample, tokenizer, "train"))
        collate: Any = task.collator(tokenizer, "train", pad_to)
    else:
        features = task.model_features(task.cross_tokenize(sample, own, tokenizer))
        collate = CrossTokenizerCollator(
            task.collator(own, "train", pad_to), task.collator(tokenizer, "train", pad_to)
        )
    batch = collate([features[i] for i in range(len(features))][:size])
    batch = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    parameters = list(student.parameters()) + list(objective.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    teacher_times, student_times = [], []
    for _ in range(4):
        start = time.perf_counter()
        with torch.no_grad():
            teacher_features = extract_features(
                teacher, teacher_inputs(batch), objective.needs_for("teacher")
            )
        middle = time.perf_counter()
        student_features = extract_features(student, batch, objective.needs_for("student"))
        objective(student_features, teacher_features, batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        teacher_times.append(middle - start)
        student_times.append(time.perf_counter() - middle)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return StepTiming(
        teacher_seconds=statistics.median(teacher_times[1:]),
        student_seconds=statistics.median(student_times[1:]),
        batch_rows=min(len(features), size),
        activation_bytes=max(0, after - before),
    )
