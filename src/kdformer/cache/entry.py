"""A cache entry: one teacher on one tokenised data set, named by the hash of what its outputs
depend on, so a change of any of them is another entry, never a stale one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdformer.cache.fingerprint import _digest
from kdformer.cache.items import Item


@dataclass
class CacheEntry:
    """One teacher on one tokenised data set: its folder and what keyed it."""

    root: Path
    fields: dict[str, Any]

    @property
    def key(self) -> str:
        """The hash of :attr:`fields`: the entry's folder name."""
        digest = _digest()
        digest.update(json.dumps(self.fields, sort_keys=True).encode())
        return digest.hexdigest()

    @property
    def folder(self) -> Path:
        return self.root / self.key

    def item_folder(self, item: Item, dtype: str) -> Path:
        return self.folder / item.folder(dtype)

    def has(self, item: Item, dtype: str) -> bool:
        """Whether the item is complete (an interrupted fill leaves no ``item.json``)."""
        return (self.item_folder(item, dtype) / "item.json").is_file()

    def size(self) -> int:
        """Bytes of the entry's shards on disk."""
        if not self.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.folder.rglob("*.safetensors"))
