"""Example inputs: a batch of the shape and kind a task's model takes, without data.

Latency, ONNX export, the memory probe, the memory estimate and the teacher cache's size probe
all run a model on a made-up batch. They get it from :meth:`kdformer.tasks.Task.example_inputs`
(one place per task), whose default for text encoders is :func:`token_inputs`; a caller that
knows no task (a bare model folder) uses :func:`token_inputs` too.
"""

from __future__ import annotations

from typing import Any

import torch

FALLBACK_VOCAB = 1000
"""Vocabulary size assumed for a model config that names none."""


def token_inputs(
    model_config: Any,
    batch_size: int,
    length: int,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``batch_size`` x ``length`` random real-token ids with an all-ones attention mask and
    zero token type ids: the batch every text encoder takes (callers keep the entries a model's
    forward names, :func:`kdformer.features.model_inputs`).

    Ids come from the upper part of the vocabulary (from 1000, or its upper half when it is
    smaller), away from the special and padding tokens, so no row ends early or turns into a
    padded one. ``generator``: where the ids come from (default: seeded with 0, so every caller
    that passes none times and measures the same batch)."""
    vocab = int(getattr(model_config, "vocab_size", None) or FALLBACK_VOCAB)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch_size, length), generator=generator)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }


QUESTION_TOKENS = 24
"""Length of the made-up question in :func:`pair_inputs`: [CLS], about 20 word pieces (a
SQuAD question has 11 words on average, a HotpotQA one 18) and [SEP]."""


def pair_inputs(
    model_config: Any,
    batch_size: int,
    length: int,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`token_inputs` laid out as question-context pairs: the first
    :data:`QUESTION_TOKENS` (at most half the row) end with the model's separator, and so
    does the context after them; the context is segment 1 where the model has two segments
    (RoBERTa-style models have one, and tell the question by the separator). An extractive-QA
    model may treat the question apart (Longformer makes it global), so a batch without one
    would time and measure a cheaper model than the one that answers."""
    batch = token_inputs(model_config, batch_size, length, generator)
    question = min(QUESTION_TOKENS, length // 2)
    if question < 2:
        return batch
    if int(getattr(model_config, "type_vocab_size", 2) or 0) >= 2:
        batch["token_type_ids"][:, question:] = 1
    sep = getattr(model_config, "sep_token_id", None)
    if isinstance(sep, int):
        batch["input_ids"][:, question - 1] = sep
        batch["input_ids"][:, -1] = sep
    return batch
