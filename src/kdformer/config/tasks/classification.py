"""Sequence classification or regression: a GLUE task, or your own files. Names this
section does not know also mean classification (the default type), so GLUE names need no list
here."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from kdformer.config.tasks.augment import AugmentConfig
from kdformer.config.tasks.base import TaskSection


class ClassificationTaskConfig(TaskSection):
    """Sequence classification or regression: a GLUE task, or your own files."""

    type: Literal["classification"] = Field(
        "classification", description="Task type (sequence classification / regression)."
    )
    implementation: ClassVar[str] = "kdformer.tasks.classification:ClassificationTask"
    name: str = Field(
        "sst2",
        description="A GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, mnli-mm, qnli, rte, wnli) "
        "or 'classification' for your own CSV/TSV/JSON-lines files.",
    )
    data_dir: Path | None = Field(
        None,
        description="GLUE root holding <TASK>/{train,dev}.tsv as the official download script "
        "writes it (e.g. ../shared/data/glue). Unset: load `hub_dataset` from the Hugging Face hub.",
    )
    hub_dataset: str = Field(
        "nyu-mll/glue", description="Hub data set used when data_dir is unset."
    )
    train_file: Path | None = Field(
        None, description="'classification' task: training file (.csv, .tsv, .jsonl/.json)."
    )
    eval_file: Path | None = Field(
        None, description="'classification' task: evaluation file (.csv, .tsv, .jsonl/.json)."
    )
    text_column: str = Field("text", description="'classification' task: column with the text.")
    text_pair_column: str | None = Field(
        None, description="'classification' task: column with the second text of a pair, if any."
    )
    label_column: str = Field("label", description="'classification' task: column with the label.")
    regression: bool = Field(
        False, description="'classification' task: labels are real numbers (one output)."
    )
    augment: AugmentConfig | None = Field(
        None,
        description="TinyBERT-style data augmentation of the distillation training set (the "
        "teacher is fine-tuned on the original data). Unset: none.",
    )
