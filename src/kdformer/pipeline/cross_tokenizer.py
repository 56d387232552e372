"""A run whose student has its own vocabulary (``student.vocabulary``): the student's
tokenizer (loaded, or trained on the distillation examples and kept in
``<output_dir>/vocabulary``), what is refused before training, and the teacher signal that
reads the teacher's own tokens (live, or from the teacher cache keyed on them)."""

from __future__ import annotations

from typing import Any

from kdformer.alignment import CrossTokenizerCollator, teacher_features
from kdformer.cache import ROW_KEY, RowIndexCollator, with_row_index
from kdformer.config import ConfigError, ExperimentConfig
from kdformer.features import FeatureNeeds
from kdformer.pipeline.outputs import Paths, console
from kdformer.pipeline.teachers import teacher_signal
from kdformer.tasks import Task
from kdformer.vocabulary import (
    adopt_vocabulary,
    existing_tokenizer,
    same_tokenizer,
    student_tokenizer,
)


def check_vocabulary_setup(config: ExperimentConfig, task: Task) -> None:
    """ConfigError, before training, for a student vocabulary the run cannot use: a task that
    cannot tokenise one text for both models, or a vocabulary to train for a pretrained
    student (whose embeddings belong to its own tokenizer). Knowledge that cannot be aligned is
    refused by the objective (``cross_tokenizer``)."""
    vocabulary = config.student.vocabulary
    if vocabulary is None:
        return
    if task.cross_tokenizer_refusal is not None:
        raise ConfigError(
            f"student.vocabulary: task '{task.name}' ({task.type}) cannot distil into a student "
            f"with its own vocabulary: {task.cross_tokenizer_refusal}"
        )
    if vocabulary.tokenizer is not None:  # it loads, and is a fast one
        existing_tokenizer(vocabulary.tokenizer)
    if config.student.init == "pretrained" and vocabulary.train is not None:
        raise ConfigError(
            "student.vocabulary.train with init: pretrained: the pretrained student's embeddings "
            "belong to its own tokenizer. Name that tokenizer (student.vocabulary: "
            f"{config.student.pretrained}), or train a vocabulary for init: teacher or random"
        )


def own_tokenizer(
    config: ExperimentConfig, task: Task, teacher_tokenizer: Any, keep: bool = True
) -> Any | None:
    """The student's own tokenizer (None: it reads the teacher's). A trained one is kept in
    ``<output_dir>/vocabulary`` and reused while its settings and texts stay the same; with
    ``keep=False`` (a dry run, which writes nothing) a stored one is reused, else one is
    trained in memory only."""
    vocabulary = config.student.vocabulary
    if vocabulary is None:
        return None
    folder = Paths(config.output_dir).root / "vocabulary"
    return student_tokenizer(
        vocabulary,
        teacher_tokenizer,
        lambda: task.vocabulary_texts(task.distillation_examples()),
        folder if keep or folder.is_dir() else None,
        log=console.print,
    )


def give_vocabulary(
    config: ExperimentConfig, student: Any, own: Any, teacher_tokenizer: Any
) -> None:
    """Give a built student the rows of its own vocabulary (a pretrained student keeps its
    embeddings, which must cover the tokenizer)."""
    vocabulary = config.student.vocabulary
    assert vocabulary is not None
    if config.student.init == "pretrained":
        size = student.get_input_embeddings().weight.shape[0]
        if len(own) > size:
            raise ConfigError(
                f"student.vocabulary has {len(own):,} tokens and the pretrained student's "
                f"embeddings {size:,} rows: name the pretrained model's own tokenizer"
            )
        return
    how = "random" if config.student.init == "random" else vocabulary.embeddings
    counts = adopt_vocabulary(student, own, teacher_tokenizer, how)
    same = " (the teacher's own tokenizer)" if same_tokenizer(own, teacher_tokenizer) else ""
    detail = (
        f"{counts['shared']:,} from one teacher row, {counts['pieces']:,} from the mean of "
        f"the teacher's pieces, {counts['none']:,} from its unknown token"
        if how == "mean"
        else "initialised at random"
    )
    console.print(
        f"student vocabulary{same}: {counts['tokens']:,} tokens ({detail}); the word "
        f"embeddings hold {student.get_input_embeddings().weight.numel() / 1e6:.2f}M parameters"
    )


def signal_for(
    config: ExperimentConfig,
    teacher: Any,
    tokenizer: Any,
    own: Any | None,
    task: Task,
    needs: FeatureNeeds,
    train_features: Any,
    pad_to: int | None = None,
) -> tuple[Any, Any, Any]:
    """:func:`~kdformer.pipeline.teachers.teacher_signal` for a student with its own tokenizer
    ``own`` too (None: the teacher's): the teacher (live, or its cache, filled on the teacher's
    own tokens) reads the ``teacher_*`` columns of the cross-tokenised features; the collator
    pads both sides and the unit maps."""
    if own is None:
        return teacher_signal(config, teacher, tokenizer, task, needs, train_features, pad_to)
    signal, cached, _ = teacher_signal(
        config, teacher, tokenizer, task, needs, teacher_features(train_features), pad_to
    )
    collator: Any = CrossTokenizerCollator(
        task.collator(own, "train", pad_to), task.collator(tokenizer, "train", pad_to)
    )
    if ROW_KEY in cached.column_names:  # the cache reads rows by index: the same order
        train_features = with_row_index(train_features)
        collator = RowIndexCollator(collator)
    return signal, train_features, collator
