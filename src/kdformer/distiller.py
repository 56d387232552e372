"""The distiller: one public object that takes a teacher (or several), a student, an
objective, a task and training settings, and trains the student, as TRL's trainers do. The
pipeline, the studies, the review and the benchmarks all build it this way; from a plain
script::

    objective = DistillationObjective(
        [LogitsConfig(), HiddenConfig()], teacher.config, student.config, task.outputs, 0.5
    )
    distiller = Distiller(student, teacher, objective, task, tokenizer,
                          TrainConfig(max_steps=200), "runs/demo/checkpoints")
    distiller.train()
    distiller.save("runs/demo/student")

The core stays usable without it: :class:`~kdformer.training.DistillationModel` puts student,
objective and teacher signal in one module that any PyTorch loop can train.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from kdformer.alignment import CrossTokenizerCollator
from kdformer.config import ConfigError, TrainConfig
from kdformer.models import non_finite_parameters, share_files
from kdformer.objective import MAIN, DistillationObjective
from kdformer.tasks import Task
from kdformer.teacher import LiveTeacher, TeacherEnsemble, TeacherSignal
from kdformer.training import (
    DistillationModel,
    DistillationTrainer,
    TrainingDiverged,
    build_trainer,
    gathered_state_dict,
    run_training,
)

Teacher = nn.Module | TeacherSignal
"""A frozen model (run live on every batch) or a teacher signal (e.g. the teacher cache)."""


def teacher_signal_of(
    teacher: Teacher | Mapping[str, Teacher], objective: DistillationObjective
) -> TeacherSignal:
    """What the objective reads from the teacher side: a live model becomes a
    :class:`~kdformer.teacher.LiveTeacher` exposing what its terms need; several teachers (by
    id, the main one under ``"main"``) become one :class:`~kdformer.teacher.TeacherEnsemble`."""

    def one(source: Teacher, teacher_id: str) -> TeacherSignal:
        if isinstance(source, nn.Module):
            return LiveTeacher(source, objective.needs_of_teacher(teacher_id))
        return source

    if isinstance(teacher, Mapping):
        if MAIN not in teacher:
            raise ConfigError(f"several teachers need the main one under '{MAIN}'")
        return TeacherEnsemble({i: one(t, i) for i, t in teacher.items()})
    return one(teacher, MAIN)


class Distiller:
    """Teacher(s) + student + objective + task + training settings -> a trained student.

    ``train_features``: the tokenised training inputs (default: the task's distillation
    examples, tokenised); ``collator``: how they batch (default: the task's). ``evaluate``:
    score the task's evaluation set every ``train.eval_steps`` steps. ``pad_to``: the one
    length every batch is padded to when the models' family needs one (the pipeline knows it
    from the models; None: each batch's own longest input). Checkpoints go to
    ``checkpoint_dir``; :meth:`train` with ``resume=True`` continues from the latest.

    ``teacher_tokenizer``: the teacher's tokenizer when the student has its own
    (``tokenizer``; cross-tokenizer distillation, :mod:`kdformer.alignment`): the default
    features are then the task's cross-tokenised ones and the default collator pads both
    sides. Build the objective with ``cross_tokenizer=True`` so that knowledge that cannot be
    aligned is refused before training."""

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher | Mapping[str, Teacher],
        objective: DistillationObjective,
        task: Task | None,
        tokenizer: Any,
        train: TrainConfig,
        checkpoint_dir: str | Path,
        *,
        train_features: Any = None,
        collator: Any = None,
        callbacks: Sequence[Any] = (),
        seed: int = 42,
        evaluate: bool = True,
        pad_to: int | None = None,
        teacher_tokenizer: Any = None,
    ):
        if task is None and (train_features is None or collator is None):
            raise ConfigError("a Distiller without a task needs train_features and a collator")
        crosses = teacher_tokenizer is not None and teacher_tokenizer is not tokenizer
        if train_features is None:
            assert task is not None
            examples = task.distillation_examples()
            train_features = (
                task.cross_tokenize(examples, tokenizer, teacher_tokenizer)
                if crosses
                else task.tokenize(examples, tokenizer, "train")
            )
        if collator is None and crosses:
            assert task is not None
            collator = CrossTokenizerCollator(
                task.collator(tokenizer, "train", pad_to),
                task.collator(teacher_tokenizer, "train", pad_to),
            )
        self.train_config = train
        self.checkpoint_dir = Path(checkpoint_dir)
        self.tokenizer = tokenizer
        self.signal = teacher_signal_of(teacher, objective)
        self.model = DistillationModel(student, objective, self.signal)
        self.trainer: DistillationTrainer = build_trainer(  # type: ignore[assignment]
            DistillationTrainer,
            self.model,
            train,
            self.checkpoint_dir,
            seed,
            task,
            tokenizer,
            train_features,
            collator,
            callbacks,
            evaluate,
            pad_to,
        )

    @property
    def student(self) -> nn.Module:
        return self.model.student

    @property
    def objective(self) -> DistillationObjective:
        return self.model.objective

    def train(self, resume: bool = False, setting: str = "distill.train") -> DistillationTrainer:
        """Train (from the latest checkpoint when ``resume``); a diverged run raises
        :class:`~kdformer.training.TrainingDiverged` saying what to change in ``setting``."""
        run_training(self.trainer, self.checkpoint_dir, resume, self.train_config, setting)
        return self.trainer

    def student_weights(self) -> dict[str, Any] | None:
        """The student's full weights (gathered when training sharded them), or None when the
        student module holds them already."""
        return gathered_state_dict(self.trainer, prefix="student.")

    def save(self, folder: str | Path) -> Path:
        """The student (safetensors) and tokenizer, loadable with plain ``from_pretrained``;
        projections and the teacher stay behind. Refuses non-finite weights."""
        folder = Path(folder)
        weights = self.student_weights()
        if weights is not None:
            bad = [
                k for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()
            ]
        else:
            bad = non_finite_parameters(self.student)
        if bad:
            raise TrainingDiverged(
                f"the trained student has non-finite weights (e.g. {bad}); it was not saved. "
                "Lower the learning rate and train again"
            )
        self.student.save_pretrained(folder, state_dict=weights)
        self.tokenizer.save_pretrained(folder)
        share_files(folder)  # safetensors leaves weights at 0600
        return folder
