"""How the student is shaped and initialised."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from kdformer.config.base import Section

VOCABULARY_KINDS = ("wordpiece", "bpe", "unigram")
"""Tokenizer models a student vocabulary can be trained as."""


class VocabularyConfig(Section):
    """The student's own tokenizer (cross-tokenizer distillation): an existing one, or one
    trained on the distillation examples. A plain string is read as ``{tokenizer: STRING}``."""

    tokenizer: str | None = Field(
        None,
        description="An existing tokenizer for the student: a folder, short name or hub name "
        "(its model files are not used, only its tokenizer).",
    )
    train: Literal["wordpiece", "bpe", "unigram"] | None = Field(
        None,
        description="Train a tokenizer on the distillation examples' texts with the `tokenizers` "
        "library: wordpiece (BERT-style), bpe (byte-level, RoBERTa-style) or unigram "
        "(SentencePiece-style, Metaspace). It keeps the teacher's special tokens.",
    )
    size: int = Field(
        8000,
        ge=100,
        description="train: the vocabulary size asked of the trainer, special tokens included "
        "(a small corpus may give fewer tokens).",
    )
    lowercase: bool | None = Field(
        None, description="train: lowercase the text; unset: as the teacher's tokenizer does."
    )
    min_frequency: int = Field(
        2, ge=1, description="train: how often a merge or piece must occur to be kept."
    )
    embeddings: Literal["mean", "random"] = Field(
        "mean",
        description="The student's new word embeddings. mean: each token's row is the mean of "
        "the rows of the teacher's pieces of its text (Fast Vocabulary Transfer, Gee et al., "
        "2022; a token the teacher also has keeps its row), from the student's own teacher-"
        "initialised rows (init: teacher or pruned); random: as init: random. init: random "
        "always starts random; init: pretrained keeps the pretrained model's embeddings.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"tokenizer": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> VocabularyConfig:
        if (self.tokenizer is None) == (self.train is None):
            raise ValueError(
                "student.vocabulary needs exactly one of tokenizer (an existing tokenizer: "
                f"folder or name) and train ({', '.join(VOCABULARY_KINDS)})"
            )
        return self


class StudentConfig(Section):
    """How the student is shaped and initialised."""

    preset: str | None = Field(
        None,
        description="Named shape: tiny, mini, small, medium, base (BERT miniatures); "
        "half/third/quarter (teacher's width, depth divided by 2/3/4); "
        "half-width/third-width/quarter-width (teacher's depth and head size, hidden size, heads "
        "and intermediate size divided by 2/3/4). Explicit fields below override it. "
        "`kdformer students` lists shapes at a parameter budget.",
    )
    num_layers: int | None = Field(None, gt=0, description="Transformer layers.")
    hidden_size: int | None = Field(None, gt=0, description="Hidden width.")
    num_heads: int | None = Field(
        None,
        gt=0,
        description="Attention heads. With init=pruned, unset means hidden_size / the teacher's "
        "head size (pruning keeps whole heads, so hidden_size = num_heads x head size).",
    )
    intermediate_size: int | None = Field(None, gt=0, description="Feed-forward width.")
    init: Literal["teacher", "random", "pruned", "pretrained"] = Field(
        "teacher",
        description="teacher: copy embeddings, task head and the `init_layers` teacher layers "
        "(same width); random; pruned: the `init_layers` teacher layers narrowed to the most "
        "important heads and FFN neurons (per layer) and hidden dimensions (global), importance "
        "from the teacher's task-loss gradients on `pruning_batches` training batches (Michel et "
        "al. 2019; first-order Taylor for hidden dimensions), BERT-style encoders only; "
        "pretrained: load `pretrained` (its shape wins).",
    )
    init_layers: Literal["uniform", "first", "last"] | list[int] = Field(
        "uniform",
        description="Teacher layers copied when init=teacher or pruned: uniform (every k-th from "
        "0, as DistilBERT), first, last, or an explicit list of 0-based teacher layer indices.",
    )
    pruning_batches: int = Field(
        8,
        gt=0,
        description="init=pruned: training batches (of distill.train.batch_size examples, "
        "seeded shuffle) whose task-loss gradients score importance (tasks without gold labels: "
        "the output Fisher of the teacher's last hidden state on unlabelled inputs).",
    )
    pretrained: str | None = Field(
        None,
        description="Model to start from when init=pretrained: a folder (e.g. a general or "
        "task student kdformer wrote, its <output_dir>/student), a short name or a hub name. It "
        "must share the teacher's tokenizer unless student.vocabulary names its own; a task "
        "head of another size is re-initialised.",
    )
    vocabulary: VocabularyConfig | None = Field(
        None,
        description="The student's own tokenizer (cross-tokenizer distillation; see "
        "docs/vocabulary.md): unset, the teacher's. A folder or name of an existing tokenizer, "
        "or {train: wordpiece (or bpe, unigram), size: 8000}. Per-example outputs need no "
        "alignment; NER logits, hidden states and relations align on words, QA spans through "
        "character offsets; attention maps are refused.",
    )
