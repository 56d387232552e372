"""Raw text for task-agnostic distillation."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from kdformer.config.tasks.base import TaskSection

MIN_TEXT_LENGTH = 16
"""The shortest block a text task trains on: with [CLS]/[SEP] and 15% masking, fewer tokens
leave a block next to no context and one or no masked token to learn from."""


class TextTaskConfig(TaskSection):
    """Raw text for task-agnostic distillation."""

    names: ClassVar[tuple[str, ...]] = ("text",)
    implementation: ClassVar[str] = "kdformer.tasks.text:TextTask"

    type: Literal["text"] = Field("text", description="Task type (raw text, task-agnostic).")
    name: str = Field("text", description="Task name, used in reports and folder names.")
    files: Path | None = Field(
        None,
        description="A folder of .txt files (searched recursively), one .txt file, or a glob.",
    )
    hub_dataset: str | None = Field(
        None, description="Hub text data set, when `files` is unset (e.g. wikitext)."
    )
    hub_config: str | None = Field(
        None, description="Its configuration (e.g. wikitext-103-raw-v1)."
    )
    hub_split: str = Field("train", description="Its split that holds the text.")
    text_column: str = Field("text", description="Its column that holds the text.")
    segment_chars: int = Field(
        4000, gt=0, description="Characters per segment (the unit of the train/eval split)."
    )
    eval_fraction: float = Field(
        0.02, gt=0, lt=1, description="Share of segments held out for evaluation."
    )
    mlm: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Masked-LM knowledge: on, off, or auto (on when the teacher checkpoint is a "
        "masked LM: its architectures name ...ForMaskedLM or ...ForPreTraining).",
    )
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked (MLM).")

    @field_validator("max_length")
    @classmethod
    def _room_to_learn(cls, value: int) -> int:
        if value < MIN_TEXT_LENGTH:
            raise ValueError(
                f"a text task packs text into blocks of max_length tokens, and {value} leaves "
                f"next to no context (and at 15% masking one or no masked token) per block: "
                f"use at least {MIN_TEXT_LENGTH} (128 to 512 is usual)"
            )
        return value
