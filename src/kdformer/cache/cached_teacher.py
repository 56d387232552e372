"""The teacher signal read back from a cache entry: batches that carry their row indices get
the stored tensors, padded to the batch's length, in the shape a live teacher's features have."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from kdformer.cache.entry import CacheEntry
from kdformer.cache.items import Item, row_positions
from kdformer.cache.row_index import ROW_KEY
from kdformer.cache.shards import ItemReader
from kdformer.features import Features


class CachedTeacher:
    """A teacher signal read from the cache for batches that carry :data:`ROW_KEY`; any other
    batch (evaluation data) goes to the live teacher."""

    def __init__(
        self,
        entry: CacheEntry,
        items: Sequence[Item],
        dtype: str,
        num_hidden_layers: int,
        live: Any,
    ):
        self.entry = entry
        self.items = list(items)
        self.num_hidden_layers = num_hidden_layers
        self.live = live
        rows = int(entry.fields["rows"])
        self.readers = {item: ItemReader(entry.item_folder(item, dtype), rows) for item in items}
        self.fill_seconds = 0.0
        """Seconds this run spent filling the entry (0 when it was all there)."""

    def record(self) -> dict[str, Any]:
        """What the cache cost this run, for ``training.json``."""
        stored = sum(
            p.stat().st_size
            for item in self.items
            for p in self.entry.item_folder(item, self.readers[item].meta["dtype"]).iterdir()
        )
        rows = int(self.entry.fields["rows"])
        return {
            "entry": str(self.entry.folder),
            "items": [item.key for item in self.items],
            "fill_seconds": round(self.fill_seconds, 3),
            "bytes": stored,
            "bytes_per_input": round(stored / max(1, rows), 1),
        }

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> Features:
        if ROW_KEY not in batch:
            return self.live(batch)
        rows = batch[ROW_KEY].tolist()
        device = batch["input_ids"].device
        length = batch["input_ids"].shape[1]
        features = Features()
        hidden: list[torch.Tensor | None] = [None] * (self.num_hidden_layers + 1)
        for item, reader in self.readers.items():
            value = self._batch_tensor(item, reader, rows, batch, length).to(device)
            kind, _, rest = item.key.partition(".")
            if kind == "out":
                features.outputs[rest] = value
            elif kind == "hidden":
                hidden[int(rest)] = value
            else:
                module, layer = rest.rsplit(".", 1)
                features.layer_modules[(module, int(layer))] = value
        if any(h is not None for h in hidden):
            features.hidden_states = tuple(hidden)  # type: ignore[arg-type]
        return features

    def _batch_tensor(
        self,
        item: Item,
        reader: ItemReader,
        rows: list[int],
        batch: Mapping[str, torch.Tensor],
        length: int,
    ) -> torch.Tensor:
        """One item's rows for a batch: per example stacked, per token zero-padded to
        ``length`` at the positions the item stores."""
        if item.unit == "example":
            return torch.cat([reader.read(row) for row in rows])
        out = torch.zeros(len(rows), length, *reader.shape)
        for b, row in enumerate(rows):
            positions = row_positions(item, batch, b)
            assert positions is not None
            value = reader.read(row)
            if value.shape[0] != positions.numel():
                raise ValueError(
                    f"teacher cache {self.entry.folder}: row {row} holds {value.shape[0]} "
                    f"{item.key} vectors but the batch has {positions.numel()} positions for it; "
                    "the entry does not match the data (delete the folder to rebuild it)"
                )
            out[b, positions.cpu()] = value
        return out
