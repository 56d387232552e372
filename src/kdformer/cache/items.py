"""What a cache entry stores: its items, one per tensor the objective reads, and which rows and
positions of a batch each keeps.

An **item** is a task output (``out.logits``), a hidden state (``hidden.4``) or a per-layer
module (``layer.query.3``). Rows are stored unpadded: a task output per example ``(shape)``, per
real token ``(length, shape)`` or per labelled token ``(labelled, shape)`` (NER's first pieces,
MLM's masked tokens), so padding costs nothing and the reader pads each batch to its own length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from kdformer.config.base import ConfigError
from kdformer.features import FeatureNeeds, Features, OutputSpec

Unit = Literal["example", "token", "labelled"]
"""What one stored row holds: a whole example, its real tokens, or its labelled tokens."""


@dataclass(frozen=True)
class Item:
    """One stored teacher tensor."""

    key: str
    """``out.<name>``, ``hidden.<i>`` or ``layer.<kind>.<layer>``."""
    unit: Unit
    label_key: str | None = None
    """``labelled``: the batch key whose entries other than -100 mark the stored tokens."""
    topk: int | None = None
    """Task outputs over classes: keep only the k largest logits of each row."""
    shift: int = 0
    """``labelled``: the output's :attr:`OutputSpec.shift` (the label of position t lies at
    t + shift), so the stored positions are those whose target is labelled."""

    def folder(self, dtype: str) -> str:
        """The item's folder name in an entry: one per key, storage dtype, top-k and shift."""
        return (
            f"{self.key}-{dtype}"
            + (f"-top{self.topk}" if self.topk else "")
            + (f"-shift{self.shift}" if self.shift else "")
        )


def cache_items(
    needs: FeatureNeeds,
    outputs: Sequence[OutputSpec],
    num_hidden_layers: int,
    topk: int | None = None,
) -> list[Item]:
    """The items a teacher's ``needs`` ask for."""
    if needs.modules:
        raise ConfigError(
            f"the teacher cache stores task outputs, hidden states and per-layer Q/K/V/FFN "
            f"tensors, not raw module outputs {sorted(needs.modules)}: set "
            "distill.cache.enabled: false for this objective"
        )
    items: list[Item] = []
    specs = {spec.name: spec for spec in outputs}
    for name in sorted(needs.outputs):
        spec = specs.get(name, OutputSpec(name))
        if spec.over == "positions":
            items.append(Item(f"out.{name}", "token"))
        elif spec.rows == "labelled" and spec.label_key:
            items.append(Item(f"out.{name}", "labelled", spec.label_key, topk, spec.shift))
        else:
            unit: Unit = "example" if spec.rows == "example" else "token"
            items.append(Item(f"out.{name}", unit, None, topk))
    if needs.hidden_states:
        layers = needs.hidden_layers or frozenset(range(num_hidden_layers + 1))
        items += [Item(f"hidden.{i}", "token") for i in sorted(layers)]
    for kind, layer in sorted(needs.layer_modules):
        if 1 <= layer <= num_hidden_layers:
            items.append(Item(f"layer.{kind}.{layer}", "token"))
    return items


def item_tensor(features: Features, item: Item) -> torch.Tensor:
    """The batch tensor of one item from a forward pass's features."""
    kind, _, rest = item.key.partition(".")
    if kind == "out":
        return features.outputs[rest]
    if kind == "hidden":
        assert features.hidden_states is not None
        return features.hidden_states[int(rest)]
    module, layer = rest.rsplit(".", 1)
    return features.layer_modules[(module, int(layer))]


def row_positions(item: Item, batch: Mapping[str, torch.Tensor], row: int) -> torch.Tensor | None:
    """Which positions of a batch row an item stores (None: the whole row, per example)."""
    if item.unit == "example":
        return None
    if item.unit == "labelled":
        labels = batch[item.label_key][row, item.shift :]
        return (labels != -100).nonzero().squeeze(-1)
    mask = batch.get("attention_mask")
    length = int(mask[row].sum()) if mask is not None else batch["input_ids"].shape[1]
    return torch.arange(length, device=batch["input_ids"].device)
