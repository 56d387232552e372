"""Token classification (NER)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from kdformer.config.tasks.base import TaskSection


class NerTaskConfig(TaskSection):
    """Token classification (NER): CoNLL-2003, LitBank, JSON lines, column files or the hub."""

    names: ClassVar[tuple[str, ...]] = ("conll2003", "litbank", "gonerd", "ner")
    implementation: ClassVar[str] = "kdformer.tasks.ner:TokenClassificationTask"

    type: Literal["ner"] = Field("ner", description="Task type (token classification, NER).")
    name: str = Field("conll2003", description="Task name, used in reports and folder names.")
    format: Literal["auto", "conll", "column", "litbank", "jsonl", "hub"] = Field(
        "auto",
        description="auto: by file type (.jsonl/.json: jsonl, .tsv: litbank, anything else: "
        "conll), hub when no file is given; conll: CoNLL-2003 (token first, tag last, "
        "-DOCSTART- lines); column: CoNLL-style columns chosen by token_column / tag_column; "
        "litbank: LitBank entity TSV (one document per file, tag layer `layer`); jsonl: "
        "objects with tokens and ner_tags; hub: `hub_dataset` from the Hugging Face hub.",
    )
    data_dir: Path | None = Field(
        None,
        description="A folder holding the data: CoNLL-2003's train.txt / valid.txt / test.txt, "
        "or LitBank-style .tsv documents (split by document, see eval_fraction).",
    )
    train_file: Path | None = Field(
        None,
        description="Training data: a file, a folder or a glob (overrides data_dir). Alone "
        "(no eval_file or data_dir), it serves both splits, split by document (eval_fraction).",
    )
    eval_file: Path | None = Field(
        None, description="Evaluation data: a file, a folder or a glob (overrides data_dir)."
    )
    eval_split: Literal["valid", "test"] = Field(
        "valid",
        description="With data_dir in the CoNLL-2003 layout: evaluate on valid.txt or test.txt.",
    )
    eval_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="When one collection of documents serves both splits (a LitBank folder, or "
        "train_file alone): the share of documents held out for evaluation, chosen "
        "deterministically (the documents whose names hash lowest).",
    )
    hub_dataset: str = Field(
        "conll2003", description="Hub data set for format hub (tokens + ner_tags columns)."
    )
    token_column: int = Field(0, description="conll/column/litbank: column index of the token.")
    tag_column: int = Field(
        -1, description="conll/column: column index of the tag (-1: the last column)."
    )
    layer: int = Field(
        1,
        ge=1,
        le=4,
        description="litbank: which nested entity layer is the tag (1: the first, outermost).",
    )
    scheme: Literal["auto", "iob1", "iob2"] = Field(
        "auto",
        description="Tag encoding of the files: iob1 (an entity starts with I-, as in the "
        "original CoNLL-2003) is rewritten as IOB2, sentence by sentence (before unit "
        "document joins them); auto detects it.",
    )
    unit: Literal["sentence", "document"] = Field(
        "sentence",
        description="Example unit: each sentence, or each document as one sequence (long "
        "inputs are split into overlapping windows).",
    )
    labels: list[str] | None = Field(
        None,
        description="The tag set in id order. Unset: O, then the training data's tags by type. "
        "Needed for JSON lines with integer ner_tags.",
    )
    label_all_tokens: bool = Field(
        False,
        description="Label every word piece (B- becomes I- after the first) instead of only a "
        "word's first piece. Predictions always come from the first piece.",
    )
    stride: int | None = Field(
        None,
        ge=0,
        description="Tokens shared by consecutive windows of a long input (unset: a quarter "
        "of max_length).",
    )
    strict: bool = Field(
        False,
        description="Score entities with seqeval's strict IOB2 mode (an I- without its B- is "
        "no entity) instead of CoNLL's lenient rule.",
    )

    @property
    def window_stride(self) -> int:
        return self.stride if self.stride is not None else self.max_length // 4

    @model_validator(mode="after")
    def _stride_fits(self) -> NerTaskConfig:
        if self.stride is not None and self.stride >= self.max_length // 2:
            raise ValueError(
                f"task.stride ({self.stride}) must be less than half of task.max_length "
                f"({self.max_length}); e.g. stride {max(0, self.max_length // 4)}"
            )
        return self
