"""SQuAD v1.1 / v2.0: reading the JSON layout, the official answer normalisation and scores,
and turning start/end logits of overlapping windows into answer texts.

The scores follow the official evaluation scripts (``evaluate-v1.1.py``, ``evaluate-v2.0.py``):
answers are lower-cased, stripped of punctuation and of the articles a/an/the, and
whitespace-normalised; exact match and token-F1 take the best over the gold answers. v1.1 counts
every gold answer, even one that normalises to nothing (a few dev answers are "."), and its F1
is 0 without a shared token; v2.0 drops such answers, a question without answers is right only
when the prediction is empty, and with the no-answer scores it also finds the best no-answer
threshold (``best_exact`` / ``best_f1``). Post-processing follows
``transformers``' ``postprocess_qa_predictions``: the ``n_best`` highest start and end logits of
every window, spans inside the context and at most ``max_answer_length`` tokens long, the best
sum of logits over all windows of the question; v2.0 answers nothing when the null score
(start and end at [CLS]) beats the best span by more than ``null_threshold``.
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdformer.config.base import DataError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, collapse whitespace (official scripts)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, version_2: bool = True) -> float:
    """Token-overlap F1 of the normalised answers. v2.0: two empty answers score 1, one empty 0;
    v1.1 (``version_2`` False): 0 whenever no token is shared, empty answers included."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if version_2 and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str], version_2: bool = True) -> list[str]:
    """The answers that count. v2.0: those non-empty after normalisation, or [""] when none is
    (an unanswerable question); v1.1: every answer ([""] only for a question without any)."""
    kept = [a for a in answers if normalize_answer(a)] if version_2 else list(answers)
    return kept or [""]


def best_threshold(
    predictions: Sequence[str],
    scores: Sequence[float],
    na_probs: Sequence[float],
    has_answer: Sequence[bool],
) -> tuple[float, float]:
    """The official v2.0 ``find_best_thresh``: the best mean score (0..1: the script's
    percentage / 100) over no-answer thresholds, and that threshold. At a threshold, questions
    whose no-answer score is at most it keep their prediction (``scores``: its exact match or
    F1) and the others answer nothing; walking the questions by rising no-answer score from
    "all answer nothing" (each unanswerable question right), an answerable one adds its score
    and an unanswerable one loses 1 if its prediction is not empty."""
    current = best = float(sum(not h for h in has_answer))
    threshold = 0.0
    for i in sorted(range(len(na_probs)), key=lambda i: na_probs[i]):
        if has_answer[i]:
            current += scores[i]
        elif predictions[i]:
            current -= 1.0
        if current > best:
            best, threshold = current, float(na_probs[i])
    return (best / len(scores) if len(scores) else 0.0), threshold


def squad_scores(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    version_2: bool = False,
    na_probs: Sequence[float] | None = None,
    spans: Sequence[str] | None = None,
) -> dict[str, float]:
    """exact_match and f1 (0..1, mean over questions, best over gold answers), by the official
    v1.1 or v2.0 rules. v2.0 also gives HasAns_/NoAns_ exact, f1 and total (a question is
    answerable when it has an answer at all, as the official script counts it; a group without
    questions is left out) and, given each question's no-answer score ``na_probs`` (higher:
    more likely no answer; the null score minus the best span's), best_exact / best_f1 and
    their thresholds (official ``find_best_thresh``) over ``spans``, each question's best
    non-null answer (default: the predictions): a threshold t answers the questions whose
    no-answer score is at most t, as ``null_threshold`` = t does, so the search covers
    thresholds above the one the predictions were made with too."""

    def raw(texts: Sequence[str]) -> tuple[list[float], list[float]]:
        exact, f1 = [], []
        for text, answered in zip(texts, answers, strict=True):
            golds = gold_answers(answered, version_2)
            exact.append(max(exact_match(text, g) for g in golds))
            f1.append(max(f1_score(text, g, version_2) for g in golds))
        return exact, f1

    exact, f1 = raw(predictions)
    has_answer = [bool(answered) for answered in answers]
    scores = {
        "exact_match": float(np.mean(exact)) if exact else 0.0,
        "f1": float(np.mean(f1)) if f1 else 0.0,
    }
    if version_2:
        mask = np.asarray(has_answer, dtype=bool)
        for name, keep in (("HasAns", mask), ("NoAns", ~mask)):
            if keep.any():
                scores[f"{name}_exact"] = float(np.asarray(exact)[keep].mean())
                scores[f"{name}_f1"] = float(np.asarray(f1)[keep].mean())
                scores[f"{name}_total"] = float(keep.sum())
        if na_probs is not None:
            if len(na_probs) != len(exact):
                raise ValueError(f"{len(na_probs)} no-answer scores for {len(exact)} questions")
            texts = predictions if spans is None else spans
            span_exact, span_f1 = (exact, f1) if spans is None else raw(spans)
            for name, values in (("exact", span_exact), ("f1", span_f1)):
                best, threshold = best_threshold(texts, values, na_probs, has_answer)
                scores[f"best_{name}"], scores[f"best_{name}_thresh"] = best, threshold
    return scores


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass
class SquadFile:
    """The questions of a SQuAD JSON file, with the answers whose offsets were off."""

    version: str
    rows: list[dict[str, Any]]
    repaired: list[str] = field(default_factory=list)  # ids whose offset was moved to the text
    unmatched: list[str] = field(default_factory=list)  # ids whose answer text is not in context
    unanswerable: list[str] = field(default_factory=list)  # ids marked is_impossible or with []


SQUAD_LAYOUT = (
    "an object with a 'data' list of articles, each {title, paragraphs: [{context, qas: [{id, "
    "question, answers: [{text, answer_start}]}]}]} (answers may also be in the Hugging Face "
    "layout {text: [...], answer_start: [...]}), or the Hugging Face rows {id, title, context, "
    "question, answers} as a JSON list or JSON lines"
)
"""What a SQuAD file holds, for the errors that refuse another layout."""


def _layout_error(path: Path, where: str, found: Any, expected: str) -> DataError:
    """A file that is not in the SQuAD layout: where, what was found, what should be there."""
    kind = type(found).__name__
    return DataError(
        f"{path}: {where} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not {expected}. "
        f"A SQuAD file is {SQUAD_LAYOUT}."
    )


def _listed(path: Path, value: Any, where: str, expected: str) -> list[Any]:
    """``value`` when it is a list (a missing one: empty); a clear error otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _layout_error(path, where, value, expected)
    return value


def _answers(path: Path, value: Any, where: str) -> list[tuple[str, int]]:
    """A question's answers as (text, answer_start) pairs, from the SQuAD layout (a list of
    {text, answer_start}) or the Hugging Face one ({text: [...], answer_start: [...]})."""
    if isinstance(value, dict) and set(value) >= {"text", "answer_start"}:
        texts, starts = value["text"], value["answer_start"]
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise DataError(
                f"{path}: {where} are in the Hugging Face layout, whose 'text' and "
                "'answer_start' must be lists of the same length (found "
                f"{texts!r:.60} and {starts!r:.60})."
            )
        pairs = list(zip(texts, starts, strict=True))
    else:
        answers = _listed(path, value, where, "a list of {text, answer_start}")
        if not all(isinstance(a, dict) for a in answers):
            bad = next(a for a in answers if not isinstance(a, dict))
            raise _layout_error(path, f"an item of {where}", bad, "an object {text, answer_start}")
        pairs = [(a.get("text"), a.get("answer_start")) for a in answers]
    checked = []
    for text, start in pairs:
        offset = _whole_number(start)
        if not isinstance(text, str) or offset is None:
            raise DataError(
                f"{path}: {where} hold an answer whose text is not a string or whose "
                f"answer_start is not a whole number (text {text!r:.60}, answer_start "
                f"{start!r:.20}): each answer is {{text: str, answer_start: int}}."
            )
        checked.append((text, offset))
    return checked


def _whole_number(value: Any) -> int | None:
    """An answer offset as an int (5, 5.0 and "5" alike), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _locate(context: str, text: str, start: int) -> int | None:
    """The offset of ``text`` in ``context``: ``start`` if it is there, else the occurrence
    nearest to it, else None."""
    if context[start : start + len(text)] == text:
        return start
    found = [m.start() for m in re.finditer(re.escape(text), context)]
    if not found:
        return None
    return min(found, key=lambda at: abs(at - start))


ROW_FIELDS = ("context", "question", "answers")
"""The fields of a question row in the Hugging Face layout (``rajpurkar/squad``)."""


def load_json(path: Path) -> Any:
    """A JSON file's data; a file of JSON lines (what ``datasets``' ``to_json`` writes) as the
    list of its objects."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            records = [json.loads(line) for line in lines] if len(lines) > 1 else []
        except json.JSONDecodeError:
            records = []
        if records and all(isinstance(record, dict) for record in records):
            return records
        raise DataError(f"{path} is not valid JSON ({exc}).") from exc


def is_row_layout(data: Any) -> bool:
    """Whether ``data`` is a list of question rows in the Hugging Face layout (``id, title,
    context, question, answers``), as ``Dataset.to_json`` of ``rajpurkar/squad`` writes them."""
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(row, dict) and all(f in row for f in ROW_FIELDS) for row in data)
    )


def rows_as_articles(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Hugging Face question rows in the SQuAD layout: grouped by title (a row without one by
    its context) and then by context, so the split by article and ``join_paragraphs`` see the
    articles the rows came from."""
    articles: dict[str, dict[str, dict[str, Any]]] = {}
    untitled: dict[str, str] = {}  # context -> its made-up title
    for n, row in enumerate(rows, 1):
        context = row["context"]
        key = context if isinstance(context, str) else f"row {n}"  # refused when read
        title = str(row.get("title") or untitled.setdefault(key, f"context-{len(untitled) + 1}"))
        paragraph = articles.setdefault(title, {}).setdefault(key, {"context": context, "qas": []})
        qa = {
            "id": row.get("id", f"row-{n}"),
            "question": row["question"],
            "answers": row["answers"],
        }
        if "is_impossible" in row:
            qa["is_impossible"] = row["is_impossible"]
        paragraph["qas"].append(qa)
    return {
        "data": [
            {"title": title, "paragraphs": list(paragraphs.values())}
            for title, paragraphs in articles.items()
        ]
    }


def read_squad(path: Path, check_offsets: bool = True) -> SquadFile:
    """Questions of a SQuAD v1.1/v2.0 JSON file as rows ``id, title, context, question,
    answers={text, answer_start}``. Answers may be listed as SQuAD does (``[{text,
    answer_start}]``) or as Hugging Face's data sets do (``{text: [...], answer_start:
    [...]}``); any other layout is refused naming where it differs. With ``check_offsets``
    (training data), an answer whose text is not at its offset is moved to the nearest
    occurrence of the text (counted in ``repaired``) and one whose text is nowhere in the
    context is dropped from that question (counted in ``unmatched``); without it every answer
    is kept as given. A question marked ``is_impossible`` or whose file lists no answer (or
    only answers with an empty text) is unanswerable (SQuAD v2.0's kind: ``impossible`` in its
    row, its id in ``unanswerable``). The file may also hold Hugging Face rows (see
    :func:`rows_as_articles`)."""
    data = load_json(path)
    if is_row_layout(data):
        data = rows_as_articles(data)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path} is not in the SQuAD layout: expected {SQUAD_LAYOUT}.")
    out = SquadFile(version=str(data.get("version", "")), rows=[])
    for a, article in enumerate(data["data"]):
        if not isinstance(article, dict):
            raise _layout_error(path, f"article {a} of 'data'", article, "an object")
        title = str(article.get("title", f"article-{a}"))
        paragraphs = _listed(
            path,
            article.get("paragraphs"),
            f"'paragraphs' of article '{title}'",
            "a list of {context, qas}",
        )
        for p, paragraph in enumerate(paragraphs):
            if not isinstance(paragraph, dict):
                raise _layout_error(
                    path, f"paragraph {p} of article '{title}'", paragraph, "an object"
                )
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise DataError(f"{path}: a paragraph of article '{title}' has no 'context' text.")
            where = f"'qas' of paragraph {p} of article '{title}'"
            for qa in _listed(path, paragraph.get("qas"), where, "a list of questions"):
                if not isinstance(qa, dict):
                    raise _layout_error(path, f"an item of {where}", qa, "an object {id, ...}")
                if "question" not in qa or "id" not in qa:
                    raise DataError(
                        f"{path}: a question of article '{title}' lacks 'id' or 'question'."
                    )
                given = _answers(path, qa.get("answers"), f"the answers of question '{qa['id']}'")
                # An empty text is no span: v2.0 exports mark "no answer" so ({"text": "",
                # "answer_start": -1}); kept, it trained as a null answer and scored as v1.1.
                given = [(text, start) for text, start in given if text.strip()]
                texts, starts = [], []
                moved = False
                for text, start in given:
                    at = _locate(context, text, start) if check_offsets else start
                    if at is None:
                        out.unmatched.append(str(qa["id"]))
                        continue
                    moved = moved or at != start
                    texts.append(text)
                    starts.append(at)
                if moved:
                    out.repaired.append(str(qa["id"]))
                impossible = bool(qa.get("is_impossible")) or not given
                if impossible:
                    texts, starts = [], []
                    out.unanswerable.append(str(qa["id"]))
                out.rows.append(
                    {
                        "id": str(qa["id"]),
                        "title": title,
                        "context": context,
                        "question": qa["question"],
                        "answers": {"text": texts, "answer_start": starts},
                        "impossible": impossible,
                    }
                )
    return out


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


def best_answer(
    windows: Sequence[tuple[Any, ...]],
    context: str,
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
    null_threshold: float = 0.0,
) -> tuple[str, float]:
    """The answer text of one question, and its score (sum of start and end logits; the null
    score when answering nothing). See :func:`find_answer`."""
    answer = find_answer(windows, context, n_best, max_answer_length, allow_null, null_threshold)
    return answer.text, answer.score


@dataclass(frozen=True)
class Answer:
    """One question's answer: the prediction and its score, and for v2.0's threshold search
    the best span (answered or not) and the no-answer score."""

    text: str  # the prediction: the best span, or "" when answering nothing
    score: float  # its score: the span's start + end logits, or the null score
    span: str  # the best span ("" when no span is valid)
    null_odds: float  # the null score minus the best span's (inf when no span is valid)


def find_answer(
    windows: Sequence[tuple[Any, ...]],
    context: str,
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
    null_threshold: float = 0.0,
) -> Answer:
    """The answer of one question (see :class:`Answer`).

    ``windows``: per window (start logits, end logits, offsets[, cls index]), where offsets[i]
    is the character span of token i in ``context``, or (-1, -1) for tokens outside the
    context (question, special tokens, padding). The [CLS] token (position 0 unless a window
    gives its index) has the start and end logits of the null score."""
    best_text, best_score = "", -np.inf
    null_score = np.inf
    for window in windows:
        start_logits, end_logits, offsets = window[:3]
        cls = window[3] if len(window) > 3 else 0
        null_score = min(null_score, float(start_logits[cls] + end_logits[cls]))
        starts = np.argsort(start_logits)[::-1][:n_best]
        ends = np.argsort(end_logits)[::-1][:n_best]
        for s in starts:
            if s >= len(offsets) or offsets[s][0] < 0:
                continue
            for e in ends:
                if e >= len(offsets) or offsets[e][0] < 0 or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[s] + end_logits[e])
                if score > best_score:
                    best_score = score
                    best_text = context[offsets[s][0] : offsets[e][1]]
    null_odds = null_score - best_score
    if allow_null and (best_score == -np.inf or null_odds > null_threshold):
        return Answer("", null_score, best_text, null_odds)
    return Answer(best_text, best_score, best_text, null_odds)
