"""The teacher-output cache: what the objective needs from the teacher, computed once and read
back from memory-mapped safetensors shards in every later epoch, run, study arm and review.

Layout under the cache root::

    <entry>/entry.json                what the entry's outputs depend on (its fingerprints)
    <entry>/<item>/item.json          one stored tensor: its unit, shape, dtype, shards
    <entry>/<item>/shard-00000.safetensors
                                      data (rows x units x shape), rows, counts

An **entry** is one teacher on one tokenised data set: its name hashes the teacher's weights,
the tokenizer, the model inputs (and the label columns that choose stored positions),
``max_length`` and the padding length. An **item** is one tensor the objective reads: a task
output (``out.logits``), a hidden state (``hidden.4``) or a per-layer module
(``layer.query.3``), in one storage dtype, optionally top-k. Runs that need other items of the
same teacher and data add them to the entry (a study's arms share it), and a change of anything
the outputs depend on is another entry, never a stale one.

Rows are stored unpadded: a task output per example ``(shape)``, per real token
``(length, shape)`` or per labelled token ``(labelled, shape)`` (NER's first pieces, MLM's masked
tokens), so padding costs nothing and the reader pads each batch to its own length. Items are
written to ``<item>.partial`` and renamed when complete: an interrupted fill leaves no item.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from kdformer.cache.fingerprint import (
    _digest,
    columns_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from kdformer.config.base import ConfigError
from kdformer.devices import free_disk_bytes
from kdformer.features import MODEL_INPUTS, FeatureNeeds, Features, OutputSpec, extract_features

ROW_KEY = "teacher_row"
"""The batch key that carries each feature's row in the cached data set."""

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
SHARD_BYTES = 256 * 2**20
FILL_VALUE = -1e4
"""Logits outside a stored top-k, below the k-th by this much: probability 0 at any
temperature up to 100 in float32, yet finite, so KL terms stay 0 * finite = 0."""

Unit = Literal["example", "token", "labelled"]


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

    def folder(self, dtype: str) -> str:
        return f"{self.key}-{dtype}" + (f"-top{self.topk}" if self.topk else "")


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
            items.append(Item(f"out.{name}", "labelled", spec.label_key, topk))
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
        return (batch[item.label_key][row] != -100).nonzero().squeeze(-1)
    mask = batch.get("attention_mask")
    length = int(mask[row].sum()) if mask is not None else batch["input_ids"].shape[1]
    return torch.arange(length, device=batch["input_ids"].device)


def partial_folder(folder: Path) -> Path:
    return folder.with_name(folder.name + ".partial")


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"


class _ItemWriter:
    """Accumulates one item's rows and writes them as shards into ``<item>.partial``."""

    def __init__(self, folder: Path, item: Item, dtype: torch.dtype):
        self.folder, self.item, self.dtype = folder, item, dtype
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.rows: list[int] = []
        self.parts: list[torch.Tensor] = []
        self.bytes = 0
        self.shards: list[str] = []
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
        from safetensors.torch import save_file

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
        self.shards.append(name)
        self.rows, self.parts, self.bytes = [], [], 0

    def finish(self, dtype_name: str) -> None:
        self.flush()
        meta = {**asdict(self.item), "shape": list(self.shape or ()), "dtype": dtype_name}
        meta.update(stored_topk=self.topk, shards=self.shards)
        (self.folder / "item.json").write_text(json.dumps(meta, indent=2) + "\n")


class _ItemReader:
    """Random access to one item's rows through memory-mapped shards."""

    def __init__(self, folder: Path, rows: int):
        from safetensors import safe_open

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


@dataclass
class CacheEntry:
    """One teacher on one tokenised data set: its folder and what keyed it."""

    root: Path
    fields: dict[str, Any]

    @property
    def key(self) -> str:
        digest = _digest()
        digest.update(json.dumps(self.fields, sort_keys=True).encode())
        return digest.hexdigest()

    @property
    def folder(self) -> Path:
        return self.root / self.key

    def item_folder(self, item: Item, dtype: str) -> Path:
        return self.folder / item.folder(dtype)

    def has(self, item: Item, dtype: str) -> bool:
        return (self.item_folder(item, dtype) / "item.json").is_file()

    def size(self) -> int:
        if not self.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.folder.rglob("*.safetensors"))


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
        self.readers = {item: _ItemReader(entry.item_folder(item, dtype), rows) for item in items}
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
        reader: _ItemReader,
        rows: list[int],
        batch: Mapping[str, torch.Tensor],
        length: int,
    ) -> torch.Tensor:
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


class TeacherCache:
    """Where cached teacher outputs live and how they are stored; :meth:`prepare` fills what a
    run needs (once) and returns the teacher signal that reads it.

    ``max_gb``: the most an entry may grow to; the size of what is missing is estimated (from
    the row lengths and one probe forward pass) and printed before anything is written."""

    def __init__(
        self,
        root: Path,
        dtype: str = "float16",
        topk: int | None = None,
        max_gb: float = 20.0,
        log: Any = print,
    ):
        if dtype not in DTYPES:
            raise ConfigError(f"cache dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        self.root = Path(root).expanduser()
        self.dtype = dtype
        self.topk = topk
        self.max_gb = max_gb
        self.log = log

    def entry(
        self, teacher: nn.Module, tokenizer: Any, features: Any, columns: Sequence[str],
        max_length: int, pad_to: int | None,
    ) -> CacheEntry:  # fmt: skip
        """The entry of ``teacher`` on ``features`` (hashing ``columns``: the model inputs and
        the label columns that choose stored positions)."""
        fields = {
            "format": 1,
            "teacher": weights_fingerprint(teacher),
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "data": columns_fingerprint(features, columns),
            "rows": len(features),
            "max_length": max_length,
            "pad_to": pad_to,
        }
        return CacheEntry(self.root, fields)

    def prepare(
        self,
        teacher: nn.Module,
        tokenizer: Any,
        features: Any,
        collator: Any,
        outputs: Sequence[OutputSpec],
        needs: FeatureNeeds,
        max_length: int,
        pad_to: int | None = None,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        live: Any = None,
        is_main_process: bool = True,
    ) -> CachedTeacher:
        """Fill the items ``needs`` asks for that the entry lacks, then read them.
        ``features``: the training features in the order the trainer indexes them (a
        :data:`ROW_KEY` column is added by :func:`with_row_index`); ``collator``: the one
        training pads batches with; ``live``: the signal for batches without row indices.
        Only the main process fills (call this inside ``main_process_first``)."""
        num_layers = int(teacher.config.num_hidden_layers)
        items = cache_items(needs, outputs, num_layers, self.topk)
        label_keys = sorted({i.label_key for i in items if i.label_key})
        columns = [c for c in features.column_names if c in MODEL_INPUTS] + label_keys
        entry = self.entry(teacher, tokenizer, features, columns, max_length, pad_to)
        missing = [item for item in items if not entry.has(item, self.dtype)]
        started = time.perf_counter()
        if missing and is_main_process:
            self._fill(entry, missing, teacher, features, collator, needs, batch_size, device)
        elif not missing:
            self.log(
                f"teacher cache: reusing {entry.folder} ({len(items)} items, "
                f"{format_bytes(entry.size())})"
            )
        signal = CachedTeacher(entry, items, self.dtype, num_layers, live)
        signal.fill_seconds = time.perf_counter() - started if missing else 0.0
        return signal

    def _fill(
        self,
        entry: CacheEntry,
        items: Sequence[Item],
        teacher: nn.Module,
        features: Any,
        collator: Any,
        needs: FeatureNeeds,
        batch_size: int,
        device: torch.device | str,
    ) -> None:
        from tqdm.auto import tqdm

        model_features = features.remove_columns([c for c in features.column_names if c == ROW_KEY])
        lengths = np.array([len(ids) for ids in model_features["input_ids"]])
        order = np.argsort(-lengths, kind="stable")  # long first: less padding, no late OOM
        teacher = teacher.eval().requires_grad_(False).to(device)
        estimate = self._estimate(items, model_features, lengths, teacher, collator, needs, device)
        existing = entry.size()
        self.log(
            f"teacher cache: computing {len(items)} item(s) for {len(lengths):,} inputs, "
            f"about {format_bytes(estimate)} ({format_bytes(estimate / len(lengths))} per "
            f"input, {self.dtype}{f', logits top-{self.topk}' if self.topk else ''}) -> "
            f"{entry.folder}"
        )
        if (existing + estimate) / 2**30 > self.max_gb:
            raise ConfigError(
                f"the teacher cache entry would grow to {format_bytes(existing + estimate)}, over "
                f"distill.cache.max_gb ({self.max_gb:g}): raise max_gb, keep fewer logits "
                "(distill.cache.topk), match fewer layers, or set distill.cache.enabled: false"
            )

        free = free_disk_bytes(entry.folder)
        if estimate > free:
            raise ConfigError(
                f"the teacher cache needs {format_bytes(estimate)} more and its disk has "
                f"{format_bytes(free)} free ({entry.folder}): point distill.cache.dir at a "
                "larger disk, keep fewer logits (distill.cache.topk) or match fewer layers"
            )
        entry.folder.mkdir(parents=True, exist_ok=True)
        (entry.folder / "entry.json").write_text(json.dumps(entry.fields, indent=2) + "\n")
        torch_dtype = DTYPES[self.dtype]
        writers = {
            item: _ItemWriter(
                partial_folder(entry.item_folder(item, self.dtype)), item, torch_dtype
            )
            for item in items
        }
        batches = range(0, len(order), batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="teacher cache", unit="batch"):
                rows = order[start : start + batch_size].tolist()
                batch = collator([model_features[int(r)] for r in rows])
                batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
                out = extract_features(teacher, batch, needs)
                for item, writer in writers.items():
                    value = item_tensor(out, item)
                    for b, row in enumerate(rows):
                        positions = row_positions(item, batch, b)
                        writer.add(row, value[b] if positions is None else value[b, positions])
        for item, writer in writers.items():
            writer.finish(self.dtype)
            final = entry.item_folder(item, self.dtype)
            shutil.rmtree(final, ignore_errors=True)
            writer.folder.rename(final)
        self.log(f"teacher cache: wrote {format_bytes(entry.size() - existing)}")

    def _estimate(
        self,
        items: Sequence[Item],
        features: Any,
        lengths: np.ndarray,
        teacher: nn.Module,
        collator: Any,
        needs: FeatureNeeds,
        device: torch.device | str,
    ) -> float:
        """Bytes the items will take: units per row times each item's row size (from one probe
        forward pass on the shortest input)."""
        with torch.inference_mode():
            probe = collator([features[int(np.argmin(lengths))]])
            probe = {k: v.to(device) for k, v in probe.items() if torch.is_tensor(v)}
            out = extract_features(teacher, probe, needs)
        itemsize = torch.empty((), dtype=DTYPES[self.dtype]).element_size()
        labelled = {
            key: np.array([sum(1 for x in row if x != -100) for row in features[key]])
            for key in {i.label_key for i in items if i.label_key}
        }
        total = 0.0
        for item in items:
            value = item_tensor(out, item)
            shape = value.shape[1:] if item.unit == "example" else value.shape[2:]
            width = math.prod(shape)
            if item.topk and shape and shape[-1] > item.topk:
                per_unit = math.prod(shape[:-1]) * item.topk * (itemsize + 4)
            else:
                per_unit = width * itemsize
            units = (
                len(lengths)
                if item.unit == "example"
                else labelled[item.label_key].sum()
                if item.unit == "labelled"
                else self._real_tokens(features, lengths)
            )
            total += float(units) * per_unit
        return total

    @staticmethod
    def _real_tokens(features: Any, lengths: np.ndarray) -> int:
        if "attention_mask" in features.column_names:
            return int(sum(sum(m) for m in features["attention_mask"]))
        return int(lengths.sum())


def with_row_index(features: Any) -> Any:
    """The features with a :data:`ROW_KEY` column (each row's index), which the collator from
    :func:`row_index_collator` carries into the batch for :class:`CachedTeacher`."""
    if ROW_KEY in features.column_names:
        return features
    return features.add_column(ROW_KEY, list(range(len(features))))


class RowIndexCollator:
    """Wraps a task's collator: takes :data:`ROW_KEY` out of each feature before padding and
    puts the rows back into the batch as one tensor."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [f.get(ROW_KEY) for f in features]
        batch = self.inner([{k: v for k, v in f.items() if k != ROW_KEY} for f in features])
        if all(row is not None for row in rows):  # (the cache's own fill has no rows to carry)
            batch[ROW_KEY] = torch.tensor(rows, dtype=torch.long)
        return batch
