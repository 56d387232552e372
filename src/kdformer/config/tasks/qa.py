"""Extractive question answering (SQuAD layout, HotpotQA, TriviaQA)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from kdformer.config.tasks.base import TaskSection


class QATaskConfig(TaskSection):
    """Extractive question answering in the SQuAD layout."""

    names: ClassVar[tuple[str, ...]] = ("squad", "squad_v2", "qa")
    implementation: ClassVar[str] = "kdformer.tasks.qa:QuestionAnsweringTask"

    type: Literal["qa"] = Field("qa", description="Task type (extractive question answering).")
    name: str = Field("squad", description="Task name, used in reports and folder names.")
    max_length: int = Field(384, gt=0, description="Tokens per window (question + context).")
    doc_stride: int | None = Field(
        None,
        gt=0,
        description="Tokens of context shared by consecutive windows of one question (unset: "
        "a third of max_length, 128 at the default 384).",
    )
    train_file: Path | None = Field(None, description="SQuAD-layout JSON file for training.")
    eval_file: Path | None = Field(
        None,
        description="SQuAD-layout JSON file for evaluation. Unset with train_file set: "
        "eval_fraction of train_file's articles are held out for evaluation.",
    )
    eval_fraction: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="With train_file alone: the share of its articles held out for evaluation, "
        "picked deterministically (the articles whose title hashes lowest).",
    )
    hub_dataset: str = Field(
        "rajpurkar/squad",
        description="Hub data set used when no file is given (rajpurkar/squad_v2 for v2.0).",
    )
    version_2: bool | None = Field(
        None,
        description="SQuAD v2.0 scoring (unanswerable questions, null answers). Unset: from the "
        "file's version field, or the hub name.",
    )
    format: Literal["auto", "squad", "hotpotqa", "triviaqa"] = Field(
        "auto",
        description="File layout: squad (SQuAD v1.1/v2.0 JSON), hotpotqa (distractor setting: "
        "10 paragraphs joined; yes/no answers left out and counted), triviaqa (official "
        "layout with evidence_dir, or the Hugging Face one; evidence joined); auto: from the "
        "file's top-level layout.",
    )
    join_paragraphs: bool = Field(
        False,
        description="squad: join each article's paragraphs into one long context (answer "
        "offsets shifted): long-context SQuAD.",
    )
    distractor_paragraphs: int = Field(
        0,
        ge=0,
        description="squad: join each question's paragraph with this many other paragraphs "
        "of its article, in a seeded random order (answer offsets shifted): one long context "
        "per question with the answer anywhere in it, as in HotpotQA's distractor setting "
        "(9: ten paragraphs, 1,200-2,000 word pieces). Trains long-context QA on SQuAD's "
        "labels.",
    )
    evidence_dir: Path | None = Field(
        None, description="triviaqa (official layout): folder holding wikipedia/ and web/."
    )
    n_best: int = Field(20, gt=0, description="Start and end candidates per window.")
    max_answer_length: int = Field(30, gt=0, description="Longest answer, in tokens.")
    null_threshold: float = Field(
        0.0,
        description="v2.0: answer nothing when the null score beats the best span by more "
        "than this. The v2.0 metrics best_exact / best_f1 are the scores at the best such "
        "threshold on the evaluation data, best_exact_thresh / best_f1_thresh that threshold "
        "(the official script's search).",
    )
    max_bad_answers: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest share of training questions whose answer text is nowhere in its "
        "context (they are left out of training, counted and reported); above it the data are "
        "refused as broken.",
    )

    @property
    def window_stride(self) -> int:
        return self.doc_stride if self.doc_stride is not None else self.max_length // 3

    @model_validator(mode="after")
    def _one_way_to_join(self) -> QATaskConfig:
        if self.join_paragraphs and self.distractor_paragraphs:
            raise ValueError(
                "task.join_paragraphs and task.distractor_paragraphs both join paragraphs: "
                "join_paragraphs makes one context of each whole article, "
                "distractor_paragraphs one of a few paragraphs per question. Set one of them"
            )
        return self

    @model_validator(mode="after")
    def _stride_fits(self) -> QATaskConfig:
        if self.doc_stride is not None and self.doc_stride >= self.max_length // 2:
            raise ValueError(
                f"task.doc_stride ({self.doc_stride}) must be less than half of task.max_length "
                f"({self.max_length}), e.g. {self.max_length // 3}"
            )
        return self
