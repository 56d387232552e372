"""How an item's rows lie on disk: safetensors shards of about :data:`SHARD_BYTES`, written in
one pass and read back memory-mapped, so a row costs one slice and no load of the whole item.

Each shard holds ``data`` (rows x units x shape; or ``values`` and ``indices`` for top-k
logits), ``rows`` (which data-set rows it holds) and ``counts`` (units per row);
``item.json`` beside them names the shards, the shape, the storage dtype and each shard's
size and checksum (BLAKE2b, computed at fill time), which :func:`item_damage` checks before an
entry is reused: a truncated or changed shard is refilled, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kdformer.cache.items import Item
from kdformer.models import safetensors_problem, share_files

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
"""Storage dtypes by the name ``distill.cache.dtype`` gives."""
SHARD_BYTES = 256 * 2**20
"""A shard is written once its rows reach this size."""
FILL_VALUE = -1e4
"""Logits outside a stored top-k, below the k-th by this much: probability 0 at any
temperature up to 100 in float32, yet finite, so KL terms stay 0 * finite = 0."""


def shard_checksum(path: Path) -> str:
    """BLAKE2b of a shard's bytes (about a second per GB on one core)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def item_damage(folder: Path) -> str | None:
    """What is wrong with a complete item's shards (missing, another size, another checksum,
    unreadable), or None when they are as written. Items written before checksums were
    recorded are checked for size and readability only."""
    try:
        meta = json.loads((folder / "item.json").read_text())
    except (OSError, ValueError) as exc:
        return f"its item.json is unreadable ({exc})"
    sizes, sums = meta.get("sizes", {}), meta.get("checksums", {})
    for name in meta.get("shards", []):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if name in sizes and path.stat().st_size != sizes[name]:
            return f"{name} has {path.stat().st_size:,} bytes, not the {sizes[name]:,} written"
        if name in sums and shard_checksum(path) != sums[name]:
            return f"{name} changed since it was written (checksum differs)"
        if name not in sums and (problem := safetensors_problem(path)) is not None:
            return f"{name} is unreadable ({problem})"
    return None


class ItemWriter:
    """Accumulates one item's rows and writes them as shards into ``folder`` (the item's
    ``.partial`` folder, which the caller renames when the item is complete)."""

    def __init__(self, folder: Path, item: Item, dtype: torch.dtype):
        self.folder, self.item, self.dtype = folder, item, dtype
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.rows: list[int] = []
        self.parts: list[torch.Tensor] = []
        self.bytes = 0
        self.shards: list[str] = []
        self.sizes: dict[str, int] = {}
        self.checksums: dict[str, str] = {}
        self.shape: tuple[int, ...] | None = None
        self.topk: int | None = None

    def add(self, row: int, value: torch.Tensor) -> None:
        """``value``: (units, *shape) for token units, (*shape) per example."""
        if self.item.unit == "example":
            value = value.unsqueeze(0)
        if self.shape is None:
            self.shape = tuple(value.shape[1:])
            k = self.item.topk
            self.topk = k if k and self.shape and self.shape[-1] > k else None
        self.rows.append(row)
        self.parts.append(value.detach().to("cpu", self.dtype))
        self.bytes += self.parts[-1].numel() * self.parts[-1].element_size()
        if self.bytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the rows gathered so far as the next shard."""
        if not self.rows:
            return
        counts = torch.tensor([p.shape[0] for p in self.parts], dtype=torch.int64)
        data = torch.cat(self.parts)
        tensors = {"rows": torch.tensor(self.rows, dtype=torch.int64), "counts": counts}
        if self.topk:
            values, indices = data.float().topk(self.topk, dim=-1)
            tensors["values"] = values.to(self.dtype).contiguous()
            tensors["indices"] = indices.to(torch.int32).contiguous()
        else:
            tensors["data"] = data.contiguous()
        name = f"shard-{len(self.shards):05d}.safetensors"
        save_file(tensors, str(self.folder / name))
        share_files(self.folder / name)  # safetensors writes 0600
        self.sizes[name] = (self.folder / name).stat().st_size
        self.checksums[name] = shard_checksum(self.folder / name)
        self.shards.append(name)
        self.rows, self.parts, self.bytes = [], [], 0

    def finish(self, dtype_name: str) -> None:
        """Write the last shard and ``item.json``, which marks the item complete."""
        self.flush()
        meta = {**asdict(self.item), "shape": list(self.shape or ()), "dtype": dtype_name}
        meta.update(
            stored_topk=self.topk, shards=self.shards, sizes=self.sizes, checksums=self.checksums
        )
        (self.folder / "item.json").write_text(json.dumps(meta, indent=2) + "\n")


class ItemReader:
    """Random access to one item's rows through memory-mapped shards."""

    def __init__(self, folder: Path, rows: int):
        self.meta = json.loads((folder / "item.json").read_text())
        self.shape = tuple(self.meta["shape"])
        self.topk = self.meta["stored_topk"]
        self.handles = [safe_open(str(folder / s), framework="pt") for s in self.meta["shards"]]
        self.shard = np.full(rows, -1, dtype=np.int64)
        self.start = np.zeros(rows, dtype=np.int64)
        self.count = np.zeros(rows, dtype=np.int64)
        for index, handle in enumerate(self.handles):
            ids = handle.get_tensor("rows").numpy()
            counts = handle.get_tensor("counts").numpy()
            self.shard[ids] = index
            self.start[ids] = np.concatenate([[0], np.cumsum(counts)[:-1]])
            self.count[ids] = counts
        if (self.shard < 0).any():
            raise ValueError(f"{folder} lacks rows {np.nonzero(self.shard < 0)[0][:5].tolist()}")
        names = ("values", "indices") if self.topk else ("data",)
        self.slices = [[h.get_slice(n) for n in names] for h in self.handles]

    def read(self, row: int) -> torch.Tensor:
        """(count, *shape) float32 for one row (top-k rows expanded with :data:`FILL_VALUE`)."""
        start, count = int(self.start[row]), int(self.count[row])
        parts = [s[start : start + count] for s in self.slices[int(self.shard[row])]]
        if not self.topk:
            return parts[0].float()
        values, indices = parts[0].float(), parts[1].long()
        full = (values.min(-1, keepdim=True).values + FILL_VALUE).expand(
            *values.shape[:-1], self.shape[-1]
        )
        return full.clone().scatter_(-1, indices, values)
