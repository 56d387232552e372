"""Offline distillation: teacher outputs computed once, stored as memory-mapped safetensors
shards, and read back by every later epoch, run, study arm and review (see :mod:`.store` for
the layout).

From a plain PyTorch loop::

    cache = TeacherCache("~/.cache/kdformer/teacher", dtype="float16")
    features = with_row_index(train_features)
    collate = RowIndexCollator(task.collator(tokenizer, "train"))
    signal = cache.prepare(teacher, tokenizer, features, collate, task.outputs,
                           objective.needs_for("teacher"), max_length=128,
                           live=LiveTeacher(teacher, objective.needs_for("teacher")))
    for batch in DataLoader(features, batch_size=32, shuffle=True, collate_fn=collate):
        out = objective(extract_features(student, batch, needs), signal(batch), batch)
"""

from kdformer.cache.cached_teacher import CachedTeacher
from kdformer.cache.entry import CacheEntry
from kdformer.cache.fingerprint import (
    columns_fingerprint,
    folder_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from kdformer.cache.items import Item, cache_items
from kdformer.cache.row_index import ROW_KEY, RowIndexCollator, with_row_index
from kdformer.cache.store import TeacherCache

__all__ = [
    "ROW_KEY",
    "CacheEntry",
    "CachedTeacher",
    "Item",
    "RowIndexCollator",
    "TeacherCache",
    "cache_items",
    "columns_fingerprint",
    "folder_fingerprint",
    "tokenizer_fingerprint",
    "weights_fingerprint",
    "with_row_index",
]
