"""Convert a full-attention BERT/RoBERTa encoder into an efficient-attention one with the same
weights: Longformer, BigBird, Nyströmformer, or kdformer's local + global block attention.

What is copied: word, token-type and position embeddings and their LayerNorm; every layer's
query/key/value, attention output, feed-forward and LayerNorms; the pooler. Position embeddings
are extended to ``max_length`` tokens by repeating the learned ones (Longformer's recipe: row
``p`` takes the source's row ``p mod source length``), each target keeping its own position
offset (RoBERTa and Longformer count from the padding index + 1, Nyströmformer from 2).
Longformer's global projections start as copies of the local ones; Nyströmformer's per-head
convolution starts at zero, so it adds nothing until trained.

Only the encoder is converted: task heads (and MLM heads) differ between these classes, so
the converted model is fine-tuned on the task next (``kdformer run`` with a ``convert:``
section does both). On inputs shorter than the efficient pattern (within Longformer's window,
BigBird's full-attention fallback, one Nyströmformer landmark per token, two local + global
blocks) the converted model gives the source model's outputs (tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import transformers

from kdformer.attention import use_local_global
from kdformer.attention.local_global import BLOCK_SIZE_KEY, GLOBAL_TOKENS_KEY
from kdformer.config.base import ConfigError
from kdformer.families import family_of
from kdformer.models import load_config, load_model, load_tokenizer

Target = Literal["full", "longformer", "bigbird", "nystromformer", "local_global"]
TARGETS: tuple[str, ...] = ("full", "longformer", "bigbird", "nystromformer", "local_global")
"""``full`` keeps full attention and only extends the positions (the reference of a review)."""
SOURCES = ("bert", "roberta", "xlm-roberta", "camembert")
_COMMON = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps",
    "initializer_range", "pad_token_id", "bos_token_id", "eos_token_id", "type_vocab_size",
)  # fmt: skip


def position_offset(config: Any) -> int:
    """Row of the position embedding that the first token uses (the model family's rule, which
    :func:`kdformer.families.position_limit` reads too)."""
    return family_of(config).position_offset(config)


def target_config(
    source: Any,
    target: Target,
    max_length: int,
    window: int = 512,
    block_size: int = 64,
    num_random_blocks: int = 3,
    num_landmarks: int = 64,
    conv_kernel_size: int | None = 35,
    global_tokens: int = 1,
    segment_length: int | None = None,
) -> Any:
    """The efficient model's config: the source's shape and settings, ``max_length`` positions."""
    if source.model_type not in SOURCES:
        raise ConfigError(
            f"conversion supports full-attention BERT/RoBERTa sources ({', '.join(SOURCES)}); "
            f"the source is a '{source.model_type}' model. Convert its BERT/RoBERTa ancestor, "
            "or distil it as it is"
        )
    if target not in TARGETS:
        raise ConfigError(f"unknown conversion target '{target}'; valid: {', '.join(TARGETS)}")
    common = {key: getattr(source, key) for key in _COMMON if hasattr(source, key)}
    if target == "longformer":
        if window <= 0 or window % 2:
            raise ConfigError(
                f"Longformer's attention window must be a positive even number of tokens "
                f"(w/2 each side), not {window}"
            )
        pad = int(source.pad_token_id or 0)
        return transformers.LongformerConfig(
            **common, attention_window=window, max_position_embeddings=max_length + pad + 1
        )
    if target == "bigbird":
        return transformers.BigBirdConfig(
            **common,
            attention_type="block_sparse",
            block_size=block_size,
            num_random_blocks=num_random_blocks,
            max_position_embeddings=max_length,
        )
    if target == "nystromformer":
        length = segment_length or max_length
        if length % num_landmarks or length > max_length:
            raise ConfigError(
                f"Nyströmformer landmarks are means of equal segments: num_landmarks "
                f"{num_landmarks} must divide the input length {length} (segment_length, or "
                f"max_length {max_length}), which must not exceed max_length"
            )
        return transformers.NystromformerConfig(
            **common,
            num_landmarks=num_landmarks,
            segment_means_seq_len=length,
            conv_kernel_size=conv_kernel_size,
            max_position_embeddings=max_length,
        )

    config = type(source).from_dict(source.to_dict())
    config.max_position_embeddings = max_length + position_offset(source)
    if target == "local_global":
        setattr(config, BLOCK_SIZE_KEY, block_size)
        setattr(config, GLOBAL_TOKENS_KEY, global_tokens)
    return config


def extend_positions(
    source: torch.Tensor, source_offset: int, rows: int, offset: int
) -> torch.Tensor:
    """A (rows, width) position table whose row ``offset + p`` is the source's row
    ``source_offset + p mod learned`` (rows before the offset keep the source's own)."""
    learned = source.shape[0] - source_offset
    table = source.new_zeros(rows, source.shape[1])
    keep = min(offset, source_offset, rows)
    table[:keep] = source[:keep]
    positions = torch.arange(rows - offset)
    table[offset:] = source[source_offset + positions % learned]
    return table


def convert(source_model: Any, target: Target, max_length: int, **options: Any) -> Any:
    """The converted base model (no task head) of a loaded BERT/RoBERTa model."""
    source = getattr(source_model, "base_model", source_model)
    config = target_config(source.config, target, max_length, **options)
    if target in ("full", "local_global"):
        model = type(source)(config, add_pooling_layer=source.pooler is not None)
    else:
        model = transformers.AutoModel.from_config(config)
    state = source.state_dict()
    family, source_family = family_of(model), family_of(source)
    new_state: dict[str, torch.Tensor] = {}
    missing = []
    for key, value in model.state_dict().items():
        source_key = family.converted_weight_source(key)
        if source_key is None:
            new_state[key] = torch.zeros_like(value)  # adds nothing until trained
        elif key == family.position_table():
            new_state[key] = extend_positions(
                state[source_family.position_table()], position_offset(source.config),
                value.shape[0], position_offset(config),
            )  # fmt: skip
        elif source_key in state and state[source_key].shape == value.shape:
            new_state[key] = state[source_key].clone()
        elif family.may_lack(key) and source_key not in state:
            new_state[key] = value  # the source had no pooler
        else:
            missing.append(key)
    if missing:
        raise ConfigError(f"conversion found no source weights for {missing[:5]}")
    model.load_state_dict(new_state, strict=True)
    if target == "local_global":
        use_local_global(model, options.get("block_size", 64), options.get("global_tokens", 1))
    return model


def convert_checkpoint(
    source: str | Path, target: Target, output_dir: str | Path, max_length: int, **options: Any
) -> Path:
    """Load ``source`` (folder or hub name), convert it, save model and tokenizer (its
    ``model_max_length`` set to ``max_length``) to ``output_dir``; loads with plain
    ``AutoModel.from_pretrained`` (local + global: add ``attn_implementation=
    "kdformer_local_global"`` after importing kdformer)."""

    config = load_config(str(source))
    if getattr(config, "model_type", None) not in SOURCES:
        target_config(config, target, max_length, **options)  # raises the clear error
    model = load_model(str(source), transformers.AutoModel)
    converted = convert(model, target, max_length, **options)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    converted.save_pretrained(out)
    tokenizer = load_tokenizer(str(source))
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out)
    return out
