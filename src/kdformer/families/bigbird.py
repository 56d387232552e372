"""BigBird: BERT's layout with block-sparse attention (sliding, global and random blocks of
``block_size`` tokens) or, with ``attention_type: original_full``, BERT's full attention.

``transformers`` silently switches block-sparse attention to full attention for any batch not
longer than ``(5 + 2 * num_random_blocks) * block_size`` tokens; measuring or distilling that
would be measuring the wrong model, so such settings are refused before training, and
block-sparse models are fed batches padded to ``max_length`` (a short batch would fall back).
Attention knowledge needs full attention: block-sparse maps include random blocks that
differ from call to call.

Under autocast (``mixed_precision: bf16``/``fp16``) transformers' block-sparse attention fails
(``scatter(): Expected self.dtype to be equal to src.dtype``: it assembles the attention map
from float32 softmax weights into a half-precision tensor), so :meth:`BigBirdFamily.prepare`
runs each block-sparse attention module with autocast off, in float32; the rest of the model
keeps mixed precision."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdformer.config.base import ConfigError
from kdformer.families.base import ModelFamily
from kdformer.families.bert import bert_layout, register_family


def block_sparse(config: Any) -> bool:
    return getattr(config, "attention_type", "block_sparse") == "block_sparse"


def sparse_minimum(config: Any) -> int:
    """Batches of at most this many tokens run full attention in ``transformers``."""
    return (5 + 2 * int(config.num_random_blocks)) * int(config.block_size)


class BigBirdFamily(ModelFamily):
    """BigBird's block-sparse rules."""

    def attention_kind(self, config: Any):
        return None if block_sparse(config) else "full"

    def check_inputs(self, config: Any, max_length: int, role: str) -> None:
        if block_sparse(config) and max_length <= sparse_minimum(config):
            raise ConfigError(
                f"the {role} is BigBird with block-sparse attention, but inputs of {max_length} "
                f"tokens are not longer than (5 + 2 x num_random_blocks {config.num_random_blocks})"
                f" x block_size {config.block_size} = {sparse_minimum(config)}: transformers "
                "would fall back to full attention, so the run would measure the wrong model. "
                "Use longer inputs (task.max_length), a smaller block_size or num_random_blocks, "
                "or attention_type: original_full"
            )

    def length_note(self, config: Any, length: int) -> str:
        if block_sparse(config) and length <= sparse_minimum(config):
            return f"full attention (block-sparse needs > {sparse_minimum(config)} tokens)"
        return ""

    def fixed_length(self, config: Any, max_length: int) -> int | None:
        return max_length if block_sparse(config) else None

    def prepare(self, model: nn.Module) -> None:
        if getattr(model, "_kdformer_bigbird_fp32", False) or not block_sparse(model.config):
            return
        for layer in self.layer_list(model):
            attention = layer.get_submodule("attention.self")
            attention.register_forward_pre_hook(_autocast_off, with_kwargs=True)
            attention.register_forward_hook(_autocast_restore, always_call=True)
        model._kdformer_bigbird_fp32 = True


def _autocast_off(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Before a block-sparse attention: autocast off (if on), its inputs in float32."""
    device = next(module.parameters()).device.type
    if not torch.is_autocast_enabled(device):
        module._kdformer_autocast = None
        return None
    off = torch.autocast(device, enabled=False)
    off.__enter__()
    module._kdformer_autocast = off

    def widen(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.float()
        return value

    return tuple(widen(a) for a in args), {k: widen(v) for k, v in kwargs.items()}


def _autocast_restore(module: nn.Module, args: tuple, output: Any) -> None:
    """After it (also when it raised): autocast as it was."""
    off = getattr(module, "_kdformer_autocast", None)
    if off is not None:
        module._kdformer_autocast = None
        off.__exit__(None, None, None)


BIGBIRD = register_family(
    bert_layout(
        "BigBird",
        ("big_bird",),
        family=BigBirdFamily,
        attention_note="block-sparse attention has random blocks; set attention_type: "
        "original_full, or use value_relation / qkv_relations",
    )
)
