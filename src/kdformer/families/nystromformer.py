"""Nyströmformer: BERT's layout with landmark (Nyström) attention and a per-head depthwise
convolution over the values (``attention.self.conv``, sliced with the heads when pruning).

Landmark attention approximates softmax(QK^T) through ``num_landmarks`` segment means, so its
maps cannot be rebuilt from Q/K (attention knowledge is refused; the relations read its
Q/K/V). The ``transformers`` implementation needs every input to be exactly
``segment_means_seq_len`` tokens (unless that equals ``num_landmarks``: then it is full
attention), so batches are padded to that length; and its padding mask has one row per query
where landmark scores have one per landmark, which fails on any padded batch: kdformer passes
the (identical) rows of a bidirectional padding mask as one row, through a forward pre-hook."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdformer.config.base import ConfigError
from kdformer.families.base import ModelFamily, Sliced
from kdformer.families.bert import BERT_SLICED, bert_layout, register_family


def landmark(config: Any) -> bool:
    return int(config.num_landmarks) != int(config.segment_means_seq_len)


def _one_mask_row(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    def squeeze(mask: Any) -> Any:
        if isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.shape[2] > 1:
            return mask[:, :, :1, :]
        return mask

    if len(args) > 1:
        args = (args[0], squeeze(args[1]), *args[2:])
    if "attention_mask" in kwargs:
        kwargs = {**kwargs, "attention_mask": squeeze(kwargs["attention_mask"])}
    return args, kwargs


class NystromformerFamily(ModelFamily):
    """Nyströmformer's fixed length and mask repair."""

    def check_inputs(self, config: Any, max_length: int, role: str) -> None:
        length, landmarks = int(config.segment_means_seq_len), int(config.num_landmarks)
        if landmark(config) and length % landmarks:
            raise ConfigError(
                f"the {role} is a Nyströmformer whose segment_means_seq_len {length} is not a "
                f"multiple of num_landmarks {landmarks}: landmarks are means of equal segments"
            )
        if max_length > length:
            raise ConfigError(
                f"the {role} is a Nyströmformer that takes exactly segment_means_seq_len = "
                f"{length} tokens, but task.max_length is {max_length}: set task.max_length to "
                f"at most {length} (inputs are padded to {length})"
            )

    def fixed_length(self, config: Any, max_length: int) -> int | None:
        return int(config.segment_means_seq_len) if landmark(config) else None

    def set_length(self, model: nn.Module, length: int) -> int | None:
        if not landmark(model.config):
            return None
        previous = int(model.config.segment_means_seq_len)
        landmarks = int(model.config.num_landmarks)
        if length < landmarks:
            raise ConfigError(
                f"a Nyströmformer with {landmarks} landmarks cannot take {length} tokens"
            )
        if length % landmarks:
            raise ConfigError(
                f"a Nyströmformer with {landmarks} landmarks takes lengths that are multiples "
                f"of {landmarks}, not {length}"
            )
        for layer in self.layer_list(model):
            layer.get_submodule("attention.self").seq_len = length
        model.config.segment_means_seq_len = length
        return previous

    def position_offset(self, config: Any) -> int:
        """Its position ids start at 2 (two rows before the first position)."""
        return 2

    def max_position_embeddings(self, config: Any, length: int) -> int:
        """Its embedding table adds the two rows before the first position itself."""
        return length

    def usable_positions(self, config: Any) -> int:
        """All of ``max_position_embeddings``: the two rows before them come on top."""
        return int(config.max_position_embeddings)

    def converted_weight_source(self, key: str) -> str | None:
        """The optional depthwise convolution over values starts at zero."""
        return None if key.endswith("attention.self.conv.weight") else key

    def prepare(self, model: nn.Module) -> None:
        if getattr(model, "_kdformer_nystrom_mask", False):
            return
        for layer in self.layer_list(model):
            layer.get_submodule("attention.self").register_forward_pre_hook(
                _one_mask_row, with_kwargs=True
            )
        model._kdformer_nystrom_mask = True


NYSTROMFORMER = register_family(
    bert_layout(
        "Nyströmformer",
        ("nystromformer",),
        family=NystromformerFamily,
        sliced={**BERT_SLICED, "attention.self.conv": Sliced(("head_index",))},
        attention=None,
        attention_note="landmark attention approximates the softmax; use value_relation or "
        "qkv_relations, which read its Q/K/V",
    )
)
