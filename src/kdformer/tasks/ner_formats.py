"""Reading token-classification data as publishers lay it out.

* CoNLL-2003 (``token POS chunk NER`` per line, ``-DOCSTART-`` lines between documents, blank
  lines between sentences) and any CoNLL-style column file: one token per line, whitespace or
  tab separated columns, the token and tag columns chosen by index;
* LitBank's entity TSV: token, then up to four nested BIO layers, tab separated, one document
  per file (a layer is chosen);
* JSON lines with ``tokens`` and ``ner_tags`` (the GONERD / Hugging Face layout; tags as strings,
  or as ids with their names given);
* IOB1 tags (CoNLL-2003's original encoding, where an entity starts with ``I-`` unless it
  follows one of the same type) are detected and rewritten as IOB2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdformer.config.base import DataError

TAG = re.compile(r"^(O|[BI]-\S+)$")


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    line: int  # 1-based line of its first token (0 for JSON records: the record number)


@dataclass
class Document:
    id: str
    sentences: list[Sentence] = field(default_factory=list)


COLUMN_HINT = "Point task.tag_column at the tag column."
"""The fix for a column file whose tag column holds something else."""
LITBANK_HINT = (
    "It is read as a LitBank entity TSV (task.format litbank, or auto for a .tsv file): the "
    "token, then up to four BIO layers, task.layer choosing one (task.tag_column does not "
    "apply). For a CoNLL-style file set task.format: conll (the tag in the last column) or "
    "column (the tag in task.tag_column)."
)
"""The fix for a CoNLL-style .tsv file that auto read as LitBank: task.tag_column is no fix."""
JSON_HINT = "Give ner_tags as tag names, or as ids with their names in task.labels."
"""The fix for a JSON record whose tags are not IOB."""


def _check_tag(
    tag: str, path: Path, number: int, line: str, column: int, hint: str = COLUMN_HINT
) -> None:
    if not TAG.match(tag):
        scheme = (
            " BIOES/IOBES tags are not supported: convert them to IOB2."
            if re.match(r"^[ES]-", tag)
            else ""
        )
        raise DataError(
            f"{path}:{number}: '{tag}' (column {column}) is not an IOB tag (O, B-TYPE or "
            f"I-TYPE) in line {line!r}. {hint}{scheme}"
        )


def read_columns(
    path: Path,
    token_column: int = 0,
    tag_column: int = -1,
    delimiter: str | None = None,
    docstart: bool = True,
    hint: str = COLUMN_HINT,
) -> list[Document]:
    """Documents of a column file. ``delimiter`` None splits on whitespace (CoNLL-2003);
    ``"\\t"`` keeps empty fields (LitBank's trailing tab). ``-DOCSTART-`` lines start a new
    document when ``docstart``; otherwise the whole file is one document. A UTF-8 byte-order
    mark is dropped (it would hide the first line's ``-DOCSTART-``). ``hint``: the fix a tag
    that is not IOB names."""
    documents = [Document(path.stem)]
    tokens: list[str] = []
    tags: list[str] = []
    first = 0

    def close_sentence() -> None:
        nonlocal tokens, tags
        if tokens:
            documents[-1].sentences.append(Sentence(tokens, tags, first))
        tokens, tags = [], []

    tag_needs = tag_column + 1 if tag_column >= 0 else -tag_column
    needed = max(token_column + 1, tag_needs, 2)  # a token and a tag at least
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    with handle:
        for number, raw in enumerate(handle, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                close_sentence()
                continue
            fields = line.split(delimiter) if delimiter else line.split()
            if docstart and fields[0] == "-DOCSTART-":
                close_sentence()
                if documents[-1].sentences:
                    documents.append(Document(f"{path.stem}-{len(documents)}"))
                continue
            if len(fields) < needed:
                raise DataError(
                    f"{path}:{number}: expected at least {needed} columns (token in column "
                    f"{token_column}, tag in column {tag_column}) but found {len(fields)} in line "
                    f"{line!r}. Fix the line, or set task.token_column / task.tag_column."
                )
            tag = fields[tag_column].strip()
            _check_tag(tag, path, number, line, tag_column, hint)
            if not tokens:
                first = number
            tokens.append(fields[token_column])
            tags.append(tag)
    close_sentence()
    return [d for d in documents if d.sentences]


def litbank_layers(path: Path) -> int:
    """How many entity layers a LitBank TSV has: the most non-empty tag columns after the
    token on any line (its trailing tab's empty field is not one)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    layers = 0
    for line in text.splitlines():
        fields = line.split("\t")
        while fields and not fields[-1].strip():
            fields.pop()
        layers = max(layers, len(fields) - 1)
    return layers


def read_litbank(path: Path, layer: int, token_column: int = 0) -> list[Document]:
    """One LitBank entity TSV as a document, tagged by entity ``layer`` (1: the outermost);
    a layer the file lacks is refused naming ``task.layer`` and the layers it has."""
    layers = litbank_layers(path)
    if not layers:
        raise DataError(
            f"{path} has no entity layer (no tag column after the token): it is not a LitBank "
            "entity TSV (token, then up to four BIO layers, tab separated). For a CoNLL-style "
            "file set task.format: conll (columns split by spaces or tabs, the tag last)."
        )
    if layer > layers:
        choices = "1" if layers == 1 else f"1 to {layers}"
        raise DataError(
            f"{path}: task.layer is {layer}, and this LitBank file has {layers} entity "
            f"layer(s) (tag columns after the token): set task.layer to {choices}."
        )
    return read_columns(path, token_column, layer, "\t", docstart=False, hint=LITBANK_HINT)


def _json_records(path: Path, text: str) -> list[tuple[int, str, Any]]:
    """(number, its text, record) of JSON lines, or of the items of a file that is one JSON
    array: such a file spans many lines, which read one by one are no JSON."""
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None  # JSON lines whose records are lists: read (and refused) line by line
        if isinstance(items, list):
            return [(n, json.dumps(item)[:200], item) for n, item in enumerate(items, 1)]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((number, line, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{number}: not valid JSON ({exc}). A .jsonl/.json file holds one "
                "object with 'tokens' and 'ner_tags' per line, or one JSON array of them."
            ) from exc
    return records


def read_jsonl(path: Path, label_names: Sequence[str] | None) -> list[Document]:
    """One document per record with ``tokens`` and ``ner_tags`` (strings, or ids into
    ``label_names``); a record's ``id`` names it. Records are JSON lines, or the items of one
    JSON array (``json.dump`` of a list, pretty-printed or not), numbered from 1 either way."""
    documents = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    for number, line, record in _json_records(path, text):
        if not isinstance(record, dict) or "tokens" not in record or "ner_tags" not in record:
            found = list(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(
                f"{path}:{number}: each line must be an object with 'tokens' and 'ner_tags' "
                f"(found {found})."
            )
        tokens, tags = [str(t) for t in record["tokens"]], list(record["ner_tags"])
        if len(tokens) != len(tags):
            raise DataError(
                f"{path}:{number}: {len(tokens)} tokens but {len(tags)} ner_tags; they must "
                "pair up one to one."
            )
        if tags and all(isinstance(t, int) for t in tags):
            if not label_names:
                raise DataError(
                    f"{path}:{number}: ner_tags are label ids; list their names, in id order, "
                    "in task.labels (e.g. [O, B-PER, I-PER, ...])."
                )
            bad = sorted({t for t in tags if not 0 <= t < len(label_names)})
            if bad:
                raise DataError(
                    f"{path}:{number}: tag ids {bad} are out of range for the "
                    f"{len(label_names)} names in task.labels."
                )
            tags = [label_names[t] for t in tags]
        tags = [str(t) for t in tags]
        for tag in tags:
            _check_tag(tag, path, number, line[:80], 0, JSON_HINT)
        doc_id = str(record.get("id", f"{path.stem}-{number}"))
        documents.append(Document(doc_id, [Sentence(tokens, tags, number)]))
    return documents


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """'iob1' when some entity starts with I- (not after B-/I- of its type), else 'iob2'."""
    for tags in sequences:
        previous = "O"
        for tag in tags:
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                return "iob1"
            previous = tag
    return "iob2"


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrite IOB1 tags as IOB2: an entity's first token gets B-."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def ordered_tags(tags: Iterable[str]) -> list[str]:
    """A stable label order: O first (always: it is what a word outside every entity gets),
    then by entity type, B- before I-."""
    entities = sorted({t for t in tags if t != "O"}, key=lambda t: (t[2:], t[:2]))
    return ["O", *entities]
