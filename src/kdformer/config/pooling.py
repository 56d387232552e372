"""How a sentence is summed up in one vector: the names the embedding task and the
sentence-level knowledge terms share (the code is :mod:`kdformer.pooling`)."""

from __future__ import annotations

from typing import Literal

Pooling = Literal["auto", "mean", "cls", "max"]
"""A pooling setting: ``auto`` defers to the model (the task) or the run."""

POOLING_MODES: tuple[str, ...] = ("mean", "cls", "max")
"""The poolings a model can have (``auto`` resolved)."""

POOLING_DESCRIPTION = (
    "mean: the mean of the real tokens' last hidden states (padding excluded); cls: the first "
    "token's ([CLS], <s>); max: the largest value of each feature over the real tokens."
)
