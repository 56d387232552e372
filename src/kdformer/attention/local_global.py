"""Local + global block attention (LSG-style) for BERT-family models, through the
``transformers`` attention interface.

The sequence is cut into blocks of ``lsg_block_size`` tokens; each query block attends to its
own block and its two neighbours (so every token sees at least ``lsg_block_size`` tokens on
each side) plus the first ``lsg_global_tokens`` tokens of the sequence ([CLS] by default),
and those global tokens attend to everything. Built from ``torch``'s scaled-dot-product
attention on blocks, so it trains (backward) and runs on CPU and GPU alike; cost grows as
``seq x (3 x block + globals)`` instead of ``seq^2``. (FlexAttention would express the pattern
directly, but torch 2.13 raises "FlexAttention does not support backward on CPU", eager or
compiled: checked on this project's CPU build.)

A model keeps plain BERT/RoBERTa weights: the block settings are two extra config fields, and
once ``kdformer`` is imported, ``AutoModel.from_pretrained(path,
attn_implementation="kdformer_local_global")`` (or ``config._attn_implementation``) selects
it. When the sequence fits in two blocks, every query sees every key and the result equals
full attention exactly (tested).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMPLEMENTATION = "kdformer_local_global"
BLOCK_SIZE_KEY = "lsg_block_size"
GLOBAL_TOKENS_KEY = "lsg_global_tokens"
DEFAULT_BLOCK_SIZE = 128
DEFAULT_GLOBAL_TOKENS = 1


def padding_mask(attention_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor | None:
    """The mask this attention takes: the (batch, keys) padding mask as booleans, not a
    (batch, 1, q, k) matrix (which alone would cost seq^2 memory)."""
    return None if attention_mask is None else attention_mask.bool()


def _key_padding(
    attention_mask: torch.Tensor | None, batch: int, length: int, device
) -> torch.Tensor:
    """(batch, keys) True for real keys, from whatever mask the model passes."""
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if attention_mask.dim() == 4:  # a bidirectional matrix: every row is the padding mask
        row = attention_mask[:, 0, 0, :]
        return row if row.dtype == torch.bool else row == 0
    return attention_mask.bool()


def _local_keys(x: torch.Tensor, blocks: int, size: int, globals_: int) -> torch.Tensor:
    """(batch, heads, seq, d) keys or values -> (batch x blocks, heads, globals + 3 x size, d):
    for each block, the global tokens, then the previous, own and next block (zeros beyond the
    ends), written once into their final layout."""
    batch, heads, length, dim = x.shape
    pad = blocks * size - length
    padded = F.pad(x, (0, 0, 0, pad)) if pad else x
    xb = padded.view(batch, heads, blocks, size, dim).transpose(1, 2)  # (b, blocks, h, size, d)
    out = x.new_empty(batch, blocks, heads, globals_ + 3 * size, dim)
    g = globals_
    if g:
        out[:, :, :, :g] = x[:, None, :, :g]
    out[:, 0, :, g : g + size] = 0
    out[:, 1:, :, g : g + size] = xb[:, :-1]
    out[:, :, :, g + size : g + 2 * size] = xb
    out[:, -1, :, g + 2 * size :] = 0
    out[:, :-1, :, g + 2 * size :] = xb[:, 1:]
    return out.view(batch * blocks, heads, globals_ + 3 * size, dim)


def _local_mask(real: torch.Tensor, blocks: int, size: int, globals_: int) -> torch.Tensor:
    """(batch x blocks, 1, size, globals + 3 x size) booleans in :func:`_local_keys`' key order:
    real keys, each global token once (its copy in the local blocks is left out), and each
    query's own position (so no row is empty, e.g. a padding row)."""
    batch, length = real.shape
    device = real.device
    position = torch.arange(blocks * size, device=device).view(blocks, size)
    # block i's previous, own and next positions: (blocks, 3 x size)
    neighbour = torch.cat([position - size, position, position + size], dim=-1)
    keys = torch.cat([torch.arange(globals_, device=device).expand(blocks, -1), neighbour], -1)
    inside = (keys >= 0) & (keys < length)
    is_local_copy = torch.zeros_like(inside)
    is_local_copy[:, globals_:] = keys[:, globals_:] < globals_
    valid = inside & ~is_local_copy  # (blocks, K)
    real_at = real[:, keys.clamp(0, length - 1)] & valid  # (batch, blocks, K)
    own = position[:, :, None] == keys[:, None, :]  # (blocks, size, K)
    own[:, :, :globals_] = False
    allowed = real_at[:, :, None, :] | own[None]
    return allowed.view(batch * blocks, 1, size, keys.shape[-1])


def local_global_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of (batch, heads, seq, d) queries/keys/values; returns (batch, seq, heads, d)
    as the ``transformers`` interface expects (no attention weights)."""
    config = module.config
    size = int(getattr(config, BLOCK_SIZE_KEY, DEFAULT_BLOCK_SIZE))
    batch, heads, length, dim = query.shape
    globals_ = min(int(getattr(config, GLOBAL_TOKENS_KEY, DEFAULT_GLOBAL_TOKENS)), length)
    scale = scaling if scaling is not None else 1 / math.sqrt(dim)
    p = dropout if module.training else 0.0
    real = _key_padding(attention_mask, batch, length, query.device)
    blocks = math.ceil(length / size)
    pad = blocks * size - length
    # Blocks go into the batch dimension: 4-D inputs take torch's fused CPU/GPU kernels, and a
    # block's (rows, keys) mask is shared by its heads.
    q = F.pad(query, (0, 0, 0, pad)) if pad else query
    q = q.view(batch, heads, blocks, size, dim).transpose(1, 2).reshape(-1, heads, size, dim)
    out = F.scaled_dot_product_attention(
        q,
        _local_keys(key, blocks, size, globals_),
        _local_keys(value, blocks, size, globals_),
        attn_mask=_local_mask(real, blocks, size, globals_),
        dropout_p=p,
        scale=scale,
    )  # (batch x blocks, heads, size, d)
    out = out.view(batch, blocks, heads, size, dim).transpose(1, 2)
    out = out.reshape(batch, heads, blocks * size, dim)[:, :, :length]
    if globals_:  # global tokens attend to every real key
        full = F.scaled_dot_product_attention(
            query[:, :, :globals_], key, value, attn_mask=real[:, None, None, :],
            dropout_p=p, scale=scale,
        )  # fmt: skip
        out = torch.cat([full, out[:, :, globals_:]], dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``attn_implementation="kdformer_local_global"`` known to ``transformers``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, local_global_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, padding_mask)


def use_local_global(
    model: nn.Module,
    block_size: int = DEFAULT_BLOCK_SIZE,
    global_tokens: int = DEFAULT_GLOBAL_TOKENS,
) -> nn.Module:
    """Switch a loaded BERT-family model to local + global block attention in place (its
    config records the settings, so a saved copy loads the same way)."""
    register()
    config = model.config
    setattr(config, BLOCK_SIZE_KEY, int(block_size))
    setattr(config, GLOBAL_TOKENS_KEY, int(global_tokens))
    model.set_attn_implementation(IMPLEMENTATION)
    return model


def restore(model: nn.Module) -> nn.Module:
    """A model saved with local + global settings (its config has ``lsg_block_size``) runs
    with that attention again, whatever implementation it was loaded with."""
    config = getattr(model, "config", None)
    if getattr(config, BLOCK_SIZE_KEY, None) and config._attn_implementation != IMPLEMENTATION:  # type: ignore[union-attr]
        register()
        model.set_attn_implementation(IMPLEMENTATION)  # type: ignore[operator]
    return model
