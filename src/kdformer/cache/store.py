"""The teacher-output cache: what the objective needs from the teacher, computed once and read
back from memory-mapped safetensors shards in every later epoch, run, study arm and review.

Layout under the cache root::

    <entry>/entry.json                what the entry's outputs depend on (its fingerprints)
    <entry>/<item>/item.json          one stored tensor: its unit, shape, dtype, shards
    <entry>/<item>/shard-00000.safetensors
                                      data (rows x units x shape), rows, counts

An **entry** (:mod:`.entry`) is one teacher on one tokenised data set: its name hashes the
teacher's weights, the tokenizer, the model inputs (and the label columns that choose stored
positions), ``max_length`` and the padding length. An **item** (:mod:`.items`) is one tensor the
objective reads, in one storage dtype, optionally top-k; its rows lie in shards
(:mod:`.shards`). Runs that need other items of the same teacher and data add them to the entry
(a study's arms share it), and a change of anything the outputs depend on is another entry,
never a stale one. This module fills what a run lacks, within a size budget checked before
anything is written (a row's size is probed on the task's example inputs); items are written
to ``<item>.partial`` and renamed when complete, so an interrupted fill leaves no item.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdformer.cache.cached_teacher import CachedTeacher
from kdformer.cache.entry import CacheEntry
from kdformer.cache.fingerprint import (
    columns_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from kdformer.cache.items import Item, cache_items, item_tensor, row_positions
from kdformer.cache.row_index import ROW_KEY
from kdformer.cache.shards import DTYPES, ItemWriter, item_damage
from kdformer.config.base import ConfigError
from kdformer.devices import free_disk_bytes
from kdformer.families import find_family
from kdformer.features import MODEL_INPUTS, FeatureNeeds, OutputSpec, extract_features
from kdformer.tasks import Task, example_inputs


def partial_folder(folder: Path) -> Path:
    """Where an item is written until it is complete."""
    return folder.with_name(folder.name + ".partial")


def format_bytes(size: float) -> str:
    """``size`` bytes for the cache's messages: B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"


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
        family = find_family(teacher)
        if family is not None and family.input_rule:  # absent otherwise: older keys still match
            fields["input_rule"] = family.input_rule
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
        task: Task | None = None,
    ) -> CachedTeacher:
        """Fill the items ``needs`` asks for that the entry lacks, then read them.
        ``features``: the training features in the order the trainer indexes them (a
        :data:`ROW_KEY` column is added by :func:`with_row_index`); ``collator``: the one
        training pads batches with (to ``pad_to``, the run's one batch length, when it has
        one); ``live``: the signal for batches without row indices; ``task``: whose example
        inputs probe the size of a row. Only the main process fills (call this inside
        ``main_process_first``)."""
        num_layers = int(teacher.config.num_hidden_layers)
        items = cache_items(needs, outputs, num_layers, self.topk)
        label_keys = sorted({i.label_key for i in items if i.label_key})
        columns = [c for c in features.column_names if c in MODEL_INPUTS] + label_keys
        entry = self.entry(teacher, tokenizer, features, columns, max_length, pad_to)
        started = time.perf_counter()
        missing = self._to_fill(entry, items, log=False)
        if missing and is_main_process:
            with self._filling(entry):  # another run may be filling this entry right now
                # only what was missing: the others were read whole and checked just now
                missing = self._to_fill(entry, missing, log=True)
                if missing:
                    self._fill(
                        entry, missing, teacher, features, collator, needs, batch_size, device,
                        task, pad_to,
                    )  # fmt: skip
        if not missing:
            self.log(
                f"teacher cache: reusing {entry.folder} ({len(items)} items, "
                f"{format_bytes(entry.size())})"
            )
        signal = CachedTeacher(entry, items, self.dtype, num_layers, live)
        signal.fill_seconds = time.perf_counter() - started if missing else 0.0
        return signal

    def _to_fill(self, entry: CacheEntry, items: Sequence[Item], log: bool) -> list[Item]:
        """The items the entry lacks or holds damaged (``log``: remove the damaged ones,
        saying so, so they are computed again)."""
        missing = []
        for item in items:
            folder = entry.item_folder(item, self.dtype)
            damage = item_damage(folder) if entry.has(item, self.dtype) else None
            if damage is not None and log:
                self.log(f"teacher cache: {folder} is damaged ({damage}); computing it again")
                shutil.rmtree(folder)
            if damage is not None or not entry.has(item, self.dtype):
                missing.append(item)
        return missing

    @contextmanager
    def _filling(self, entry: CacheEntry) -> Iterator[None]:
        """Hold the entry's lock while its items are checked and filled: two runs of one
        teacher on one data set (two terminals, a study beside a run) share the entry, and
        without the lock the second would delete the first's half-written items. The second
        waits, then reuses what the first wrote. No lock where ``fcntl`` is missing."""
        try:
            import fcntl
        except ImportError:  # not POSIX
            yield
            return
        entry.folder.mkdir(parents=True, exist_ok=True)
        with open(entry.folder / ".lock", "a") as handle:
            locked = True
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log(
                    f"teacher cache: another run is filling {entry.folder}; waiting for it to "
                    "finish, then reusing what it wrote"
                )
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError as exc:  # file systems without locks (some NFS and FUSE mounts)
                self.log(f"teacher cache: cannot lock {entry.folder} ({exc}); filling unlocked")
                locked = False
            try:
                yield
            finally:
                if locked:
                    fcntl.flock(handle, fcntl.LOCK_UN)

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
        task: Task | None = None,
        pad_to: int | None = None,
    ) -> None:
        model_features = features.remove_columns([c for c in features.column_names if c == ROW_KEY])
        lengths = np.array([len(ids) for ids in model_features["input_ids"]])
        order = np.argsort(-lengths, kind="stable")  # long first: less padding, no late OOM
        teacher = teacher.eval().requires_grad_(False).to(device)
        shortest = int(lengths.min())  # the probe's length, padded as the collator would
        probe_length = -(-shortest // pad_to) * pad_to if pad_to else shortest
        estimate = self._estimate(
            items, model_features, lengths, teacher, needs, device, task, probe_length
        )
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
            item: ItemWriter(partial_folder(entry.item_folder(item, self.dtype)), item, torch_dtype)
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
        needs: FeatureNeeds,
        device: torch.device | str,
        task: Task | None,
        probe_length: int,
    ) -> float:
        """Bytes the items will take: units per row times each item's row size (from one probe
        forward pass on ``task``'s example input of ``probe_length``)."""
        with torch.inference_mode():
            probe = example_inputs(task, teacher.config, 1, probe_length)
            probe = {k: v.to(device) for k, v in probe.items()}
            out = extract_features(teacher, probe, needs)
        itemsize = torch.empty((), dtype=DTYPES[self.dtype]).element_size()
        labelled = {  # stored positions: those whose target (shift later) is labelled
            (key, shift): sum(sum(1 for x in row[shift:] if x != -100) for row in features[key])
            for key, shift in {(i.label_key, i.shift) for i in items if i.label_key}
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
                else labelled[(item.label_key, item.shift)]
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
