"""Sentence embeddings: a bare encoder whose pooled output serves as a sentence vector, distilled
on unlabelled sentences and scored on sentence pairs (STS, paraphrase)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from kdformer.config.pooling import POOLING_DESCRIPTION, Pooling
from kdformer.config.tasks.base import TaskSection


class EmbeddingTaskConfig(TaskSection):
    """Sentence embeddings: training sentences from files, evaluation on scored or labelled
    sentence pairs."""

    names: ClassVar[tuple[str, ...]] = ("embedding", "sts")
    implementation: ClassVar[str] = "kdformer.tasks.embedding:EmbeddingTask"

    type: Literal["embedding"] = Field(
        "embedding", description="Task type (sentence embeddings: pooled encoder outputs)."
    )
    name: str = Field("sts", description="Task name, used in reports and folder names.")
    sentence_files: list[Path] = Field(
        default_factory=list,
        description="Training sentences: text files with one sentence per line (blank lines "
        "skipped).",
    )
    text_files: list[Path] = Field(
        default_factory=list,
        description="Training sentences: raw text, read as a text task reads it (a folder of .txt "
        "files searched recursively, a file or a glob), split into sentences at . ! ? followed "
        "by a capital; sentences under min_words words are left out.",
    )
    table_files: list[Path] = Field(
        default_factory=list,
        description="Training sentences: the text columns of CSV/TSV files with a header row "
        "(both sentences of a pair): GLUE's TSVs (SST-2 sentence, MRPC #1/#2 String, STS-B "
        "sentence1/sentence2, QNLI, QQP, MNLI, RTE columns) and your own files with such columns; "
        "other columns: set text_columns. Labels and scores are not read.",
    )
    text_columns: list[str] | None = Field(
        None,
        description="The columns of table_files that hold sentences. Unset: detected from the "
        "header (the first known layout it has).",
    )
    min_words: int = Field(
        3, ge=1, description="text_files: shortest sentence kept, in words (drops 'Yes.', "
        "chapter headings and the like)."
    )  # fmt: skip
    exclude_eval_sentences: bool = Field(
        True,
        description="Leave out training sentences that occur in the evaluation pairs, so the "
        "score measures sentences the student never saw (the count is printed).",
    )
    sts_file: Path | None = Field(
        None,
        description="Evaluation pairs with similarity scores: GLUE STS-B's TSV (sentence1, "
        "sentence2 and score columns among others) or a plain CSV/TSV with a header naming "
        "sentence1, sentence2, score (or without a header: those three columns in that order). "
        "Scored by the Spearman and Pearson correlations of the cosine similarity with the "
        "scores; Spearman is the main metric.",
    )
    paraphrase_file: Path | None = Field(
        None,
        description="Evaluation pairs labelled paraphrase (1) or not (0): GLUE MRPC's TSV "
        "(Quality, #1 String, #2 String), QQP's (question1, question2, is_duplicate) or a "
        "CSV/TSV with sentence1, sentence2, label. Scored by accuracy and F1 at the best cosine "
        "threshold (main metric when there is no sts_file).",
    )
    max_eval_samples: int | None = Field(
        None, gt=0, description="Use only the first this-many pairs of each evaluation file."
    )
    pooling: Pooling = Field(
        "auto",
        description="How the encoder's last hidden states become one sentence vector: "
        + POOLING_DESCRIPTION
        + " auto: the teacher's sentence-transformers pooling (its modules.json and "
        "1_Pooling/config.json), mean when it has none. Distilled students are saved with it.",
    )
    normalize: bool | Literal["auto"] = Field(
        "auto",
        description="Scale sentence vectors to unit length (a Normalize module in the saved "
        "sentence-transformers model). auto: whether the teacher's modules.json has one. Cosine "
        "scores do not change; dot products of the saved model's vectors do.",
    )

    @field_validator("sentence_files", "text_files", "table_files", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        """A single path is a list of one."""
        return [value] if isinstance(value, str | Path) else value

    @model_validator(mode="after")
    def _has_evaluation_pairs(self) -> EmbeddingTaskConfig:
        if self.sts_file is None and self.paraphrase_file is None:
            raise ValueError(
                "an embedding task is scored on sentence pairs: set task.sts_file (pairs with "
                "similarity scores, e.g. ../shared/data/sts/stsb-train.tsv) and/or "
                "task.paraphrase_file (labelled pairs, e.g. ../shared/data/glue/MRPC/dev.tsv)"
            )
        return self
