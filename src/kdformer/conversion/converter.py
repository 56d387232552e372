"""Converting a loaded model or a checkpoint to one target: its config, an untrained target
model, the source's weights copied in (:mod:`kdformer.conversion.weights`), the target's
finishing step; a checkpoint is saved with its tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers

from kdformer.config.base import ConfigError
from kdformer.config.convert import Target
from kdformer.conversion.registry import conversion_of, target_options
from kdformer.conversion.weights import copy_weights
from kdformer.families import position_limit
from kdformer.models import (
    load_model,
    load_model_config,
    load_tokenizer,
    resolve_name,
    share_files,
)


def target_config(source: Any, target: Target, max_length: int, **options: Any) -> Any:
    """The efficient model's config: the source's shape and settings, ``max_length`` positions."""
    conversion = conversion_of(target)
    return conversion.config(source, max_length, **target_options(target, max_length, options))


def convert(source_model: Any, target: Target, max_length: int, **options: Any) -> Any:
    """The converted base model (no task head) of a loaded BERT/RoBERTa model."""
    source = getattr(source_model, "base_model", source_model)
    config = target_config(source.config, target, max_length, **options)
    conversion = conversion_of(target)
    model = conversion.model(source, config)
    copy_weights(source, model)
    conversion.finish(model)
    return model


def dropped_positions(source: Any, max_length: int) -> int | None:
    """The source's usable positions when converting it to ``max_length`` tokens keeps fewer
    of them (the converted model is shrunk, not extended); None when none is dropped."""
    limit = position_limit(source)
    return limit if limit is not None and max_length < limit else None


def dropped_heads(source: Any) -> list[str]:
    """The classes with a head (``BertForSequenceClassification``, ``BertForMaskedLM``...)
    that a source config was saved as: conversion keeps only their encoder."""
    return [a for a in getattr(source, "architectures", None) or [] if not a.endswith("Model")]


def check_output_folder(output_dir: str | Path) -> None:
    """A ConfigError when ``output_dir`` is a file, or lies below one (a folder cannot be
    written there), before any weights are loaded."""
    out = Path(output_dir)
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        where = "is a file" if blocked == out else f"lies below {blocked}, which is a file"
        raise ConfigError(
            f"cannot write the converted model to {out}: it {where}, not a folder. Choose "
            "another output folder (a new one, or a model folder to replace)"
        )


def check_not_the_source(source: str | Path, output_dir: str | Path) -> None:
    """A ConfigError when ``output_dir`` is the source model's own folder: the converted
    encoder would replace the source's weights (and drop its task head) for good."""
    folder = Path(resolve_name(str(source)))
    out = Path(output_dir)
    if folder.is_dir() and out.exists() and out.resolve() == folder.resolve():
        raise ConfigError(
            f"cannot write the converted model to {out}: it is the folder of the source model "
            f"{source}, which converting would overwrite (its weights, and its task head, which "
            "conversion drops). Choose another output folder"
        )


def convert_checkpoint(
    source: str | Path, target: Target, output_dir: str | Path, max_length: int, **options: Any
) -> Path:
    """Load ``source`` (folder or hub name), convert it, save model and tokenizer (its
    ``model_max_length`` set to ``max_length``) to ``output_dir``; loads with plain
    ``AutoModel.from_pretrained`` (unless the target's registry entry has a ``load_note``)."""
    config = load_model_config(str(source))
    target_config(config, target, max_length, **options)  # a clear error before loading weights
    check_output_folder(output_dir)
    check_not_the_source(source, output_dir)
    model = load_model(str(source), transformers.AutoModel)
    converted = convert(model, target, max_length, **options)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    converted.save_pretrained(out)
    tokenizer = load_tokenizer(str(source))
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out)
    share_files(out)  # safetensors leaves weights at 0600
    return out
