"""How the student is shaped and initialised."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdformer.config.base import Section


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
        "seeded shuffle) whose task-loss gradients score importance.",
    )
    pretrained: str | None = Field(
        None,
        description="Model to start from when init=pretrained: a folder (e.g. a general or "
        "task student kdformer wrote, its <output_dir>/student), a short name or a hub name. It "
        "must share the teacher's tokenizer; a task head of another size is re-initialised.",
    )
