"""Reading the user's classification files: CSV/TSV with a header row (or GLUE's TSVs, some
without one) and JSON lines; raw labels turned into class ids or regression targets.

Every problem is a :class:`DataError` naming the file, the line or the values at fault.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kdformer.config.base import DataError

logger = logging.getLogger(__name__)


ROW = "_row"
"""The column the readers add: where each row is in its file (a data row number of a CSV/TSV
file, counted after the header; 'line N' of JSON lines, 'record N' of a JSON array)."""


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
    The column :data:`ROW` numbers the rows kept (data rows counted after the header), so later
    warnings name the rows of the file.
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
            rows: list[str] = []
            skipped: list[int] = []  # line numbers (1-based, as an editor shows them)
            for number, row in enumerate(reader, 1):
                if len(row) < needed:
                    skipped.append(reader.line_num)
                    continue
                for out, i in index.items():
                    columns[out].append(row[i])
                rows.append(str(number))
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
    return {**columns, ROW: rows}


def _parse_json_records(path: Path) -> list[tuple[str, Any]]:
    """The records of a JSON-lines file (or of a single JSON array), each with its place
    ('line 3', or 'record 3' of an array) for later messages; a bad line is named."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    if text.lstrip().startswith("["):
        lines = [(1, text)]
    else:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records: list[tuple[str, Any]] = []
    for number, line in lines:
        try:
            loaded = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON ({exc}).") from exc
        if isinstance(loaded, list):
            records.extend((f"record {len(records) + 1}", record) for record in loaded)
        else:
            records.append((f"line {number}", loaded))
    return records


def _refuse_nested_values(
    path: Path, places: list[str], records: list[dict[str, Any]], wanted: dict[str, str]
) -> None:
    """A list (or object) where a label or a text belongs would be read as its text, '[0, 1]':
    multi-label data as one class per combination of labels, a token list as one string."""
    for out, col in wanted.items():
        nested = [
            (place, record[col])
            for place, record in zip(places, records, strict=True)
            if isinstance(record.get(col), (list, dict))
        ]
        if not nested:
            continue
        place, value = nested[0]
        kind = "list" if isinstance(value, list) else "JSON object"
        more = f" (and {len(nested) - 1} more record(s) like it)" if len(nested) > 1 else ""
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        if out == "label":
            fix = (
                "multi-label classification (several labels per example) is not supported: "
                "give each record one label (a class name or a whole number; a number with "
                "task.regression), or split multi-label data into one binary task per label."
            )
        else:
            fix = f"give each record's '{col}' as one string."
        raise DataError(
            f"{path} {place}: the {out.replace('_', ' ')} {shown} is a {kind}{more}: {fix}"
        )


def read_json_lines(path: Path, wanted: dict[str, str]) -> dict[str, list[Any]]:
    """Like :func:`read_delimited` for JSON lines (a single JSON array is accepted too)."""
    placed = _parse_json_records(path)
    places, records = [place for place, _ in placed], [record for _, record in placed]
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
    _refuse_nested_values(path, places, records, wanted)
    usable = [
        (place, r) for place, r in placed if all(r.get(col) is not None for col in wanted.values())
    ]
    if len(usable) < len(records):
        logger.warning(
            "%s: skipped %d record(s) with missing fields", path, len(records) - len(usable)
        )
    columns = {out: [r[col] for _, r in usable] for out, col in wanted.items()}
    return {**columns, ROW: [place for place, _ in usable]}


TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
"""The file types of the user's classification data."""


def _places(rows: list[str]) -> str:
    """Where rows are in their file, for a warning: the first ten."""
    shown = ", ".join(rows[:10]) + (", ..." if len(rows) > 10 else "")
    return f"data row(s) {shown}, counted after the header" if rows[0].isdigit() else shown


def _is_nan(value: Any) -> bool:
    """Whether a label is nan: JSON's NaN, or the text pandas writes for a missing value."""
    if isinstance(value, float):
        return math.isnan(value)
    try:
        return isinstance(value, str) and math.isnan(float(value))
    except ValueError:
        return False


def without_unusable_rows(
    columns: dict[str, list[Any]], path: Path, wanted: dict[str, str], *, nan_labels: bool
) -> dict[str, list[Any]]:
    """``columns`` without the rows that are no example, each kind with a warning naming the
    rows: an empty label cell (read as it was, a class of its own; JSON records without a label
    are skipped alike), a nan label when ``nan_labels`` (classification: a missing value, not a
    class; regression refuses nan instead) and an empty text (an empty sentence taught as an
    example of its label). A file left without rows is refused: a wrong column, most likely."""
    rows = columns.get(ROW) or [str(i + 1) for i in range(len(columns["label"]))]
    texts = [out for out in wanted if out != "label"]
    reasons: dict[str, list[int]] = {}
    for i, label in enumerate(columns["label"]):
        if isinstance(label, str) and not label.strip():
            reason = "with an empty label"
        elif nan_labels and _is_nan(label):
            reason = "with the label nan, a missing value, not a class"
        else:
            blank = [out for out in texts if not str(columns[out][i]).strip()]
            if not blank:
                continue
            reason = f"with an empty text in column '{wanted[blank[0]]}'"
        reasons.setdefault(reason, []).append(i)
    if not reasons:
        return columns
    drop = {i for skipped in reasons.values() for i in skipped}
    if len(drop) == len(rows):
        found = "; ".join(f"{len(skipped)} {reason}" for reason, skipped in reasons.items())
        raise DataError(
            f"{path} holds no examples: each of its {len(rows)} row(s) has an empty text in "
            f"column {' or '.join(repr(wanted[out]) for out in texts)} or an empty label "
            f"({found}). Check that task.text_column (and task.text_pair_column) and "
            f"task.label_column ('{wanted['label']}') name the columns that hold them."
        )
    for reason, skipped in reasons.items():
        logger.warning(
            "%s: skipped %d row(s) %s (%s)",
            path, len(skipped), reason, _places([rows[i] for i in skipped]),
        )  # fmt: skip
    return {
        name: [value for i, value in enumerate(values) if i not in drop]
        for name, values in columns.items()
    }


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


def encode_floats(values: list[Any], path: Path, what: str = "regression label") -> list[float]:
    """Regression targets (or STS scores: ``what``); values that are not numbers, and nan or
    inf, which ``float`` reads and which would turn the loss or the correlations into nan
    without a word, are reported all at once."""
    numbers: list[float] = []
    bad: list[str] = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            bad.append(str(value))
            continue
        numbers.append(number)
        if not math.isfinite(number):
            bad.append(str(value))
    if bad:
        raise DataError(
            f"{path} has {len(bad)} {what}(s) that are not numbers, or nan or inf: "
            f"{sorted(set(bad))[:10]}. Give every row a number, or remove the rows without one."
        )
    return numbers


def real_number_labels(names: list[str]) -> list[str]:
    """The class labels that are numbers but not whole ones (0.5, 3.75) when every label is a
    number: regression targets read as classes, each distinct value a class of its own."""
    out = []
    for name in names:
        try:
            number = float(name)
        except ValueError:
            return []  # a label that is no number: class names
        if math.isfinite(number) and not number.is_integer():
            out.append(name)
    return out
