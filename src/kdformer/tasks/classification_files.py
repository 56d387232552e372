"""Reading the user's classification files: CSV/TSV with a header row (or GLUE's TSVs, some
without one) and JSON lines; raw labels turned into class ids or regression targets.

Every problem is a :class:`DataError` naming the file, the line or the values at fault.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kdformer.config.base import DataError

logger = logging.getLogger(__name__)


def read_delimited(
    path: Path,
    wanted: dict[str, str],
    *,
    delimiter: str,
    quoting: int = csv.QUOTE_MINIMAL,
    header: tuple[str, ...] | None = None,
) -> dict[str, list[str]]:
    """Columns ``{out_name: values}`` for ``wanted = {out_name: column name}`` of a CSV/TSV file.

    ``header`` names the columns of files without a header row. Rows too short to hold every
    wanted column are skipped with a warning: the GLUE QQP files contain a few such broken lines.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
            names = list(header) if header else [name.strip() for name in next(reader, [])]
            if not names:
                raise DataError(f"{path} is empty; it needs a header row and at least one example.")
            missing = [col for col in wanted.values() if col not in names]
            if missing:
                raise DataError(
                    f"{path} has no column(s) {missing}; columns found: {names}. Point the task "
                    "at a file with these columns (or, for your own files, set "
                    "task.text_column / task.text_pair_column / task.label_column)."
                )
            index = {out: names.index(col) for out, col in wanted.items()}
            needed = max(index.values()) + 1
            columns: dict[str, list[str]] = {out: [] for out in wanted}
            skipped: list[int] = []  # line numbers (1-based, as an editor shows them)
            for row in reader:
                if len(row) < needed:
                    skipped.append(reader.line_num)
                    continue
                for out, i in index.items():
                    columns[out].append(row[i])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    if skipped:
        shown = ", ".join(str(n) for n in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        logger.warning(
            "%s: skipped %d malformed row(s) with fewer than %d fields, at line(s) %s",
            path, len(skipped), needed, shown,
        )  # fmt: skip
    if not columns[next(iter(wanted))]:
        raise DataError(f"{path} holds no examples (a header row only, or only malformed rows).")
    return columns


def _parse_json_records(path: Path) -> list[Any]:
    """The records of a JSON-lines file (or of a single JSON array), with the bad line named."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    if text.lstrip().startswith("["):
        lines = [(1, text)]
    else:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records = []
    for number, line in lines:
        try:
            loaded = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON ({exc}).") from exc
        records.extend(loaded if isinstance(loaded, list) else [loaded])
    return records


def read_json_lines(path: Path, wanted: dict[str, str]) -> dict[str, list[Any]]:
    """Like :func:`read_delimited` for JSON lines (a single JSON array is accepted too)."""
    records = _parse_json_records(path)
    if not all(isinstance(record, dict) for record in records):
        example = '{"text": "...", "label": "..."}'
        raise DataError(f"{path} must hold one JSON object per line, e.g. {example}")
    found = list(dict.fromkeys(key for record in records for key in record))
    missing = [col for col in wanted.values() if col not in found]
    if records and missing:
        raise DataError(
            f"{path} has no field(s) {missing}; fields found: {found}. Set task.text_column / "
            "task.text_pair_column / task.label_column to the names your file uses."
        )
    usable = [r for r in records if all(r.get(col) is not None for col in wanted.values())]
    if len(usable) < len(records):
        logger.warning(
            "%s: skipped %d record(s) with missing fields", path, len(records) - len(usable)
        )
    return {out: [r[col] for r in usable] for out, col in wanted.items()}


def _label_key(value: Any) -> str:
    """Canonical text of a label, so 1, "1" and " 1" are the same class."""
    text = str(value).strip()
    return str(int(text)) if re.fullmatch(r"[+-]?\d+", text) else text


def sorted_label_names(values: Iterable[Any]) -> list[str]:
    """Distinct labels, ordered numerically when they are all integers, else alphabetically."""
    keys = set(map(_label_key, values))
    if all(re.fullmatch(r"-?\d+", key) for key in keys):
        return [str(k) for k in sorted(int(key) for key in keys)]
    return sorted(keys)


def encode_labels(values: list[Any], name_to_id: dict[str, int], path: Path) -> list[int]:
    """Class ids of raw label values; unknown values are reported all at once."""
    keys = [_label_key(value) for value in values]
    ids = [name_to_id.get(key, -1) for key in keys]
    unknown = sorted({key for key, i in zip(keys, ids, strict=True) if i < 0})
    if unknown:
        raise DataError(
            f"{path} has label(s) {unknown[:10]} that are not in the task's label set "
            f"{list(dict.fromkeys(name_to_id))}. Fix the file, or for your own data make sure "
            "the training file contains every label."
        )
    return ids


def encode_floats(values: list[Any], path: Path) -> list[float]:
    """Regression targets; values that are not numbers are reported all at once."""
    numbers: list[float] = []
    bad: list[str] = []
    for value in values:
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            bad.append(repr(value))
    if bad:
        raise DataError(f"{path} has non-numeric regression label(s) {bad[:10]}.")
    return numbers
