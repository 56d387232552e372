"""The row index that ties a training batch to its cached teacher rows: a :data:`ROW_KEY`
column added to the features and carried by the collator into each batch."""

from __future__ import annotations

from typing import Any

import torch

ROW_KEY = "teacher_row"
"""The batch key that carries each feature's row in the cached data set."""


def with_row_index(features: Any) -> Any:
    """The features with a :data:`ROW_KEY` column (each row's index), which the collator from
    :class:`RowIndexCollator` carries into the batch for :class:`CachedTeacher`."""
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
