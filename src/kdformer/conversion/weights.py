"""Copying a full-attention encoder's weights into a converted model, each weight where the
target's family says it comes from (:class:`kdformer.families.ModelFamily`: the same name in
BERT's layout, a renamed source such as Longformer's global projections, zero for a module
full attention lacks, or the position table extended)."""

from __future__ import annotations

import torch
from torch import nn

from kdformer.config.base import ConfigError
from kdformer.families import family_of


def copy_weights(source: nn.Module, model: nn.Module) -> None:
    """Load ``model`` (a converted base model) with the weights of ``source`` (its source's
    base model); a ConfigError names any weight with no source."""
    state = source.state_dict()
    family, source_family = family_of(model), family_of(source)
    new_state: dict[str, torch.Tensor] = {}
    missing = []
    for key, value in model.state_dict().items():
        source_key = family.converted_weight_source(key)
        if source_key is None:
            new_state[key] = torch.zeros_like(value)  # adds nothing until trained
        elif key == family.position_table():
            new_state[key] = family.extend_positions(
                state[source_family.position_table()],
                source_family.position_offset(source.config),
                model.config,
                value.shape[0],
            )
        elif source_key in state and state[source_key].shape == value.shape:
            new_state[key] = state[source_key].clone()
        elif family.may_lack(key) and source_key not in state:
            new_state[key] = value  # the source had no pooler
        else:
            missing.append(key)
    if missing:
        raise ConfigError(f"conversion found no source weights for {missing[:5]}")
    model.load_state_dict(new_state, strict=True)
