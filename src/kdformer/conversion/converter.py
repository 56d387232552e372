"""Converting a loaded model or a checkpoint to one target: its config, an untrained target
model, the source's weights copied in (:mod:`kdformer.conversion.weights`), the target's
finishing step; a checkpoint is saved with its tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers

from kdformer.config.convert import Target
from kdformer.conversion.registry import conversion_of, target_options
from kdformer.conversion.weights import copy_weights
from kdformer.models import load_model, load_model_config, load_tokenizer


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


def convert_checkpoint(
    source: str | Path, target: Target, output_dir: str | Path, max_length: int, **options: Any
) -> Path:
    """Load ``source`` (folder or hub name), convert it, save model and tokenizer (its
    ``model_max_length`` set to ``max_length``) to ``output_dir``; loads with plain
    ``AutoModel.from_pretrained`` (unless the target's registry entry has a ``load_note``)."""
    config = load_model_config(str(source))
    target_config(config, target, max_length, **options)  # a clear error before loading weights
    model = load_model(str(source), transformers.AutoModel)
    converted = convert(model, target, max_length, **options)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    converted.save_pretrained(out)
    tokenizer = load_tokenizer(str(source))
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out)
    return out
