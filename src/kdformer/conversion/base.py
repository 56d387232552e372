"""What a conversion target supplies (:class:`Conversion`), and the sources every target takes:
full-attention BERT/RoBERTa encoders, whose shape and settings the target keeps."""

from __future__ import annotations

from typing import Any

import transformers
from torch import nn

from kdformer.config.base import ConfigError
from kdformer.families import family_of

SOURCES = ("bert", "roberta", "xlm-roberta", "camembert")
"""The ``model_type`` of the models conversion takes (BERT's layout, full attention)."""
_COMMON = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps",
    "initializer_range", "pad_token_id", "bos_token_id", "eos_token_id", "type_vocab_size",
)  # fmt: skip


def check_source(source: Any) -> None:
    """ConfigError unless ``source`` (a config) is a full-attention BERT/RoBERTa model."""
    if getattr(source, "model_type", None) not in SOURCES:
        raise ConfigError(
            f"conversion supports full-attention BERT/RoBERTa sources ({', '.join(SOURCES)}); "
            f"the source is a '{getattr(source, 'model_type', None)}' model. Convert its "
            "BERT/RoBERTa ancestor, or distil it as it is"
        )


def common_settings(source: Any) -> dict[str, Any]:
    """The source config's shape and settings that every target's config shares."""
    return {key: getattr(source, key) for key in _COMMON if hasattr(source, key)}


class Conversion:
    """How a full-attention encoder becomes one target. A target (one module of this package,
    named by its :data:`kdformer.config.convert.CONVERT_TARGETS` entry) defines
    :meth:`make_config`, taking exactly the options its entry names as keyword-only
    arguments; where each weight comes from and how positions are laid out are the target
    family's rules (:class:`kdformer.families.ModelFamily`)."""

    def make_config(self, source: Any, max_length: int, **options: Any) -> Any:
        """The target's config from the source's (before positions are set)."""
        raise NotImplementedError

    def config(self, source: Any, max_length: int, **options: Any) -> Any:
        """The target's config: the source's shape, the target's settings, and positions for
        inputs of ``max_length`` tokens (as the target's family counts them)."""
        check_source(source)
        config = self.make_config(source, max_length, **options)
        config.max_position_embeddings = family_of(config).max_position_embeddings(
            config, max_length
        )
        return config

    def model(self, source: nn.Module, config: Any) -> nn.Module:
        """An untrained target model of ``config`` for the source's weights to go into."""
        return transformers.AutoModel.from_config(config)

    def finish(self, model: nn.Module) -> None:  # noqa: B027  (an optional hook)
        """Anything the converted model needs once the weights are in."""
