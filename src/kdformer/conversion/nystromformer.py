"""``nystromformer``: Nyströmformer's landmark attention at one fixed input length; its
per-head convolution over values starts at zero, so it adds nothing until trained
(:class:`kdformer.families.nystromformer.NystromformerFamily`)."""

from __future__ import annotations

from typing import Any

import transformers

from kdformer.config.base import ConfigError
from kdformer.conversion.base import Conversion, common_settings


class NystromformerConversion(Conversion):
    """Landmarks are means of equal segments of the one input length."""

    def make_config(
        self,
        source: Any,
        max_length: int,
        *,
        num_landmarks: int,
        segment_length: int | None,
        conv_kernel_size: int,
    ) -> Any:
        length = segment_length or max_length
        if length % num_landmarks or length > max_length:
            raise ConfigError(
                f"Nyströmformer landmarks are means of equal segments: num_landmarks "
                f"{num_landmarks} must divide the input length {length} (segment_length, or "
                f"max_length {max_length}), which must not exceed max_length"
            )
        if conv_kernel_size % 2 == 0:
            raise ConfigError(
                f"Nyströmformer's conv_kernel_size must be odd (the convolution pads "
                f"(k - 1) / 2 each side), not {conv_kernel_size}: an even kernel gives one "
                f"position too many and the model fails at its first forward. Use "
                f"{conv_kernel_size - 1} or {conv_kernel_size + 1}"
            )
        return transformers.NystromformerConfig(
            **common_settings(source),
            num_landmarks=num_landmarks,
            segment_means_seq_len=length,
            conv_kernel_size=conv_kernel_size,
        )
