"""Sentence vectors from token states: the pooling an embedding model applies to its last
hidden states. One function, so the embedding task's scorer, its saved sentence-transformers
model and the sentence-level knowledge terms all pool the same way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdformer.config.pooling import POOLING_MODES


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """One vector per sequence of (batch, seq, width) states, in float32.

    ``mean``: the mean over real tokens (``mask`` 1), as sentence-transformers' mean pooling
    (a row without real tokens gives zeros); ``cls``: the first token's state; ``max``: each
    feature's largest value over real tokens (padding never wins). ``mask``: (batch, seq),
    None when every token is real."""
    hidden = hidden.float()
    if how == "cls":
        return hidden[:, 0]
    if mask is None:
        mask = hidden.new_ones(hidden.shape[:2])
    weights = mask[:, : hidden.shape[1]].to(hidden.dtype).unsqueeze(-1)
    if how == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
    if how == "max":
        lowest = torch.finfo(hidden.dtype).min
        pooled = hidden.masked_fill(weights == 0, lowest).amax(1)
        return torch.where(weights.sum(1) > 0, pooled, torch.zeros_like(pooled))
    raise ValueError(f"unknown pooling {how!r}; valid: {', '.join(POOLING_MODES)}")


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """Unit-length rows (a zero row stays zero), as sentence-transformers' Normalize module."""
    return F.normalize(vectors, p=2, dim=-1)
