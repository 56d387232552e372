"""The GLUE task table: each task's folder and columns in the official TSV files, its
configuration and columns on the hub, its label set and its metrics.

GLUE data comes either from the TSV files the official download script writes (``task.data_dir``,
works offline) or from the Hugging Face hub (``task.hub_dataset``). Either way the label ids are
those of the hub data set ``nyu-mll/glue``, so models fine-tuned on one source work on the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdformer.config.base import DataError


@dataclass(frozen=True)
class GlueSpec:
    """Where one GLUE task's columns live in the TSV files and on the hub."""

    folder: str  # folder name the official download script writes
    hub_config: str  # configuration name in nyu-mll/glue
    text: str  # TSV column names (from the header row, or `header` below) ...
    label: str
    hub_text: str  # ... and the hub's column names for the same texts
    label_names: tuple[str, ...] | None  # in hub order, so index = label id; None: regression
    text_pair: str | None = None
    hub_text_pair: str | None = None
    metrics: tuple[str, ...] = ("accuracy",)  # the first one is the main metric
    eval_file: str = "dev.tsv"
    hub_eval_split: str = "validation"
    header: tuple[str, ...] | None = None  # column names for files without a header row


_PAIR = dict(
    text="sentence1", text_pair="sentence2", hub_text="sentence1", hub_text_pair="sentence2"
)
_NLI = ("entailment", "not_entailment")
_MNLI = dict(
    folder="MNLI",
    hub_config="mnli",
    label="gold_label",
    text="sentence1",
    text_pair="sentence2",
    hub_text="premise",
    hub_text_pair="hypothesis",
    label_names=("entailment", "neutral", "contradiction"),
)

GLUE_TASKS: dict[str, GlueSpec] = {
    "cola": GlueSpec(
        folder="CoLA", hub_config="cola", text="sentence", label="label", hub_text="sentence",
        label_names=("unacceptable", "acceptable"), metrics=("mcc", "accuracy"),
        header=("source", "label", "original_label", "sentence"),  # CoLA has no header row
    ),
    "sst2": GlueSpec(
        folder="SST-2", hub_config="sst2", text="sentence", label="label", hub_text="sentence",
        label_names=("negative", "positive"),
    ),
    "mrpc": GlueSpec(
        folder="MRPC", hub_config="mrpc", text="#1 String", text_pair="#2 String",
        label="Quality", hub_text="sentence1", hub_text_pair="sentence2",
        label_names=("not_equivalent", "equivalent"), metrics=("accuracy", "f1"),
    ),
    "stsb": GlueSpec(
        folder="STS-B", hub_config="stsb", **_PAIR, label="score",
        label_names=None, metrics=("pearson", "spearman"),
    ),
    "qqp": GlueSpec(
        folder="QQP", hub_config="qqp", text="question1", text_pair="question2",
        label="is_duplicate", hub_text="question1", hub_text_pair="question2",
        label_names=("not_duplicate", "duplicate"), metrics=("accuracy", "f1"),
    ),
    "mnli": GlueSpec(**_MNLI, eval_file="dev_matched.tsv", hub_eval_split="validation_matched"),
    "mnli-mm": GlueSpec(
        **_MNLI, eval_file="dev_mismatched.tsv", hub_eval_split="validation_mismatched"
    ),
    "qnli": GlueSpec(
        folder="QNLI", hub_config="qnli", text="question", text_pair="sentence", label="label",
        hub_text="question", hub_text_pair="sentence", label_names=_NLI,
    ),
    "rte": GlueSpec(folder="RTE", hub_config="rte", **_PAIR, label="label", label_names=_NLI),
    "wnli": GlueSpec(
        folder="WNLI", hub_config="wnli", **_PAIR, label="label",
        label_names=("not_entailment", "entailment"),
    ),
}  # fmt: skip


def glue_task_dir(data_dir: Path, folder: str) -> Path:
    """The task folder under a GLUE root, or ``data_dir`` itself when it already is that folder."""
    if not data_dir.is_dir():
        raise DataError(
            f"task.data_dir {data_dir} is not a folder. Set it to the GLUE root holding "
            f"{folder}/train.tsv (as the official download script writes it)."
        )
    wanted = folder.lower().replace("-", "")
    for child in data_dir.iterdir():
        if child.is_dir() and child.name.lower().replace("-", "") == wanted:
            return child
    if any(data_dir.glob("*.tsv")):
        return data_dir
    return data_dir / folder  # does not exist; the caller's error names the expected path
