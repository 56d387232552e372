"""Reading the embedding task's files: training sentences (one per line, raw text split into
sentences, the text columns of CSV/TSV tables) and evaluation pairs (scored STS pairs,
labelled paraphrase pairs), each layout detected from the header.

Every problem is a :class:`DataError` naming the file, the columns found and the fix."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any

from kdformer.config.base import DataError
from kdformer.tasks.classification_files import encode_floats
from kdformer.tasks.text import read_text_file, text_files

logger = logging.getLogger(__name__)

TEXT_LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("sentence1", "sentence2"),  # STS-B, RTE, WNLI, MNLI (GLUE TSVs), plain pair files
    ("#1 String", "#2 String"),  # MRPC
    ("question1", "question2"),  # QQP
    ("question", "sentence"),  # QNLI
    ("premise", "hypothesis"),  # NLI files from the hub
    ("text", "text_pair"),
    ("sentence",),  # SST-2
    ("text",),
)
"""Text columns of known table layouts, tried in order."""
PAIR_LAYOUTS = TEXT_LAYOUTS[:3]
"""The two sentence columns of an evaluation pair file."""
SCORE_COLUMNS = ("score", "similarity", "label")
"""Columns that hold an STS pair's graded similarity (GLUE STS-B: score)."""
LABEL_COLUMNS = ("label", "Quality", "is_duplicate")
"""Columns that hold a paraphrase pair's 0/1 label (MRPC: Quality, QQP: is_duplicate)."""

ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "capt", "col", "gen", "lt", "rev",
        "mme", "mlle", "messrs", "hon", "sgt", "maj", "gov", "no", "vs", "etc", "vol", "ch", "fig",
    }
)  # fmt: skip
"""Words whose full stop does not end a sentence."""
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]*[A-Z])")
_LAST_WORD = re.compile(r"(\w+)\W*$")


def _file(path: Path, setting: str) -> Path:
    """``path`` when it is a file; a folder, or nothing, is refused naming ``setting``."""
    path = Path(path)
    if path.is_dir():
        instead = (
            " (for a folder of raw text, use task.text_files: it reads every .txt file in it)"
            if setting == "task.sentence_files"
            else ""
        )
        raise DataError(f"{setting} {path} is a folder: give the path of a file{instead}.")
    if not path.is_file():
        raise DataError(f"{setting} not found: {path}. Give the path of an existing file.")
    return path


def read_table(path: Path, setting: str) -> tuple[list[str], list[list[str]]]:
    """A CSV/TSV file's first row and the rows after it. ``.tsv`` (and files whose first line
    holds a tab) are split on tabs with no quoting, as GLUE's TSVs must be read (their texts
    hold unbalanced quotes); anything else as CSV."""
    path = _file(path, setting)
    try:
        text = path.read_text(encoding="utf-8-sig")  # GLUE's MRPC header starts with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    tabbed = path.suffix.lower() == ".tsv" or "\t" in text.split("\n", 1)[0]
    reader = csv.reader(
        text.splitlines(),
        delimiter="\t" if tabbed else ",",
        quoting=csv.QUOTE_NONE if tabbed else csv.QUOTE_MINIMAL,
    )
    try:
        rows = [row for row in reader if row]
    except csv.Error as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    if not rows:
        raise DataError(f"{path} is empty; it needs a header row and at least one row of data.")
    return [name.strip() for name in rows[0]], rows[1:]


def _columns(
    path: Path, header: list[str], rows: list[list[str]], wanted: dict[str, int]
) -> dict[str, list[str]]:
    """``{name: values}`` of the wanted column indices; rows too short are skipped with a
    warning (a broken line of a large file should not stop a run)."""
    needed = max(wanted.values()) + 1
    kept = [row for row in rows if len(row) >= needed]
    if len(kept) < len(rows):
        logger.warning(
            "%s: skipped %d row(s) with fewer than %d fields", path, len(rows) - len(kept), needed
        )
    if not kept:
        raise DataError(f"{path} holds no rows of data under its header {header}.")
    return {name: [row[i] for row in kept] for name, i in wanted.items()}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_sentence_lines(path: Path, setting: str = "task.sentence_files") -> list[str]:
    """One sentence per line; blank lines skipped, whitespace normalised."""
    path = _file(path, setting)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    sentences = [" ".join(line.split()) for line in lines if line.strip()]
    if not sentences:
        raise DataError(f"{setting} {path} holds no sentences (every line is blank).")
    first = next(line for line in lines if line.strip())
    tabbed = sum("\t" in line for line in lines if line.strip())
    table = path.suffix.lower() in (".tsv", ".csv")
    if table or tabbed > len(sentences) // 2:
        kind = f"a {path.suffix} file" if table else f"{tabbed} of its lines hold tabs"
        raise DataError(
            f"{setting} {path} is a table ({kind}; its first line: {first[:60]!r}), and read "
            "as one sentence per line its header, labels and scores would become training "
            "sentences: give it in task.table_files, which reads its text columns only "
            "(task.text_columns names them when its header does not)."
        )
    return sentences


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph: cut after . ! ? (and closing quotes or brackets) when a
    capital follows, except after an abbreviation (Mr., Dr., ...) or a single initial."""
    text = " ".join(paragraph.split())
    out, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if text[match.start()] == ".":
            word = _LAST_WORD.search(text[start : match.start()])
            if word and (
                word.group(1).lower() in ABBREVIATIONS
                or (len(word.group(1)) == 1 and word.group(1).isupper())
            ):
                continue
        out.append(text[start : match.end()].strip())
        start = match.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def read_text_sentences(value: Path, min_words: int, setting: str = "task.text_files") -> list[str]:
    """The sentences of raw text (a folder of .txt files, a file or a glob, as the text task
    reads them): paragraphs at blank lines, split by :func:`split_sentences`; sentences of
    fewer than ``min_words`` words are left out."""
    sentences = []
    for path in text_files(Path(value), setting):
        text = read_text_file(path)  # UTF-8 text, or a DataError naming the file
        for paragraph in re.split(r"\n\s*\n", text):
            sentences += [s for s in split_sentences(paragraph) if len(s.split()) >= min_words]
    if not sentences:
        raise DataError(
            f"{setting} {value} holds no sentence of {min_words} or more words: every file is "
            "empty, or lower task.min_words"
        )
    return sentences


def read_table_sentences(
    path: Path, columns: list[str] | None, setting: str = "task.table_files"
) -> list[str]:
    """The sentences in a table's text columns (both of a pair, first then second per row):
    ``columns``, or the first layout of :data:`TEXT_LAYOUTS` its header has."""
    header, rows = read_table(path, setting)
    if columns:
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(
                f"{path} has no column(s) {missing}; columns found: {header}. Set "
                "task.text_columns to the columns that hold its sentences."
            )
        chosen: tuple[str, ...] = tuple(columns)
    else:
        found = next((layout for layout in TEXT_LAYOUTS if set(layout) <= set(header)), None)
        if found is None:
            raise DataError(
                f"{path} has no known text columns; columns found: {header}. Give it a header "
                "naming them (sentence, or sentence1 and sentence2, ...) or set "
                "task.text_columns to the columns that hold its sentences."
            )
        chosen = found
    values = _columns(Path(path), header, rows, {c: header.index(c) for c in chosen})
    sentences = [" ".join(text.split()) for row in zip(*values.values()) for text in row]
    return [s for s in sentences if s]


def _pair_columns(
    path: Path, header: list[str], rows: list[list[str]], targets: tuple[str, ...], what: str
) -> tuple[dict[str, list[str]], list[list[str]]]:
    """The two sentence columns and the target column of an evaluation pair file, by header;
    a file without a header of known names but whose first row is (sentence, sentence,
    number) is read as those three columns."""
    layout = next((pair for pair in PAIR_LAYOUTS if set(pair) <= set(header)), None)
    target = next((name for name in targets if name in header), None)
    if layout is not None and target is not None:
        wanted = {
            "sentence1": header.index(layout[0]),
            "sentence2": header.index(layout[1]),
            "target": header.index(target),
        }
        return _columns(path, header, rows, wanted), rows
    if layout is None and len(header) == 3 and _is_number(header[2]):
        rows = [header, *rows]
        return _columns(path, header, rows, {"sentence1": 0, "sentence2": 1, "target": 2}), rows
    lacking = (
        f"no {what} column ({' / '.join(targets)})"
        if layout is not None
        else "no sentence pair columns (sentence1 and sentence2, #1 String and #2 String, or "
        "question1 and question2)"
    )
    raise DataError(
        f"{path} has {lacking}; columns found: {header}. An evaluation pair file needs a header "
        f"naming sentence1, sentence2 and {targets[0]} (or GLUE's layout)"
        + (", or no header and those three columns in that order." if what == "score" else ".")
    )


def read_scored_pairs(path: Path, setting: str = "task.sts_file") -> dict[str, list[Any]]:
    """STS pairs: ``sentence1``, ``sentence2`` and their graded ``score`` (GLUE STS-B's TSV,
    or a CSV/TSV with sentence1, sentence2, score, with or without the header)."""
    header, rows = read_table(path, setting)
    columns, _ = _pair_columns(Path(path), header, rows, SCORE_COLUMNS, "score")
    return {
        "sentence1": columns["sentence1"],
        "sentence2": columns["sentence2"],
        "score": encode_floats(columns["target"], Path(path), "score"),
    }


def read_labelled_pairs(path: Path, setting: str = "task.paraphrase_file") -> dict[str, list[Any]]:
    """Paraphrase pairs: ``sentence1``, ``sentence2`` and a 0/1 ``label`` (1: paraphrase),
    from GLUE MRPC's or QQP's TSV or a CSV/TSV with sentence1, sentence2, label."""
    header, rows = read_table(path, setting)
    columns, _ = _pair_columns(Path(path), header, rows, LABEL_COLUMNS, "label")
    return {
        "sentence1": columns["sentence1"],
        "sentence2": columns["sentence2"],
        "label": _binary_labels(columns["target"], Path(path)),
    }


def _binary_labels(values: list[str], path: Path) -> list[int]:
    """0/1 labels; anything else is reported, all at once."""
    bad = sorted({v for v in values if v.strip() not in ("0", "1")})
    if bad:
        raise DataError(
            f"{path} has label(s) {bad[:10]}; a paraphrase file labels each pair 1 "
            "(paraphrase) or 0 (not). Graded similarity scores go in task.sts_file."
        )
    return [int(v) for v in values]
