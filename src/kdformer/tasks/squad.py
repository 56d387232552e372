"""SQuAD v1.1 / v2.0: reading the JSON layout, the official answer normalisation and scores,
and turning start/end logits of overlapping windows into answer texts.

The scores follow the official evaluation scripts (``evaluate-v1.1.py``, ``evaluate-v2.0.py``):
answers are lower-cased, stripped of punctuation and of the articles a/an/the, and
whitespace-normalised; exact match and token-F1 take the best over the gold answers; a question
without answers (v2.0) is right only when the prediction is empty. Post-processing follows
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


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised answers; two empty answers score 1, one empty 0."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str]) -> list[str]:
    """The answers that count: those non-empty after normalisation, or [""] when none is
    (an unanswerable v2.0 question)."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def squad_scores(
    predictions: Sequence[str], answers: Sequence[Sequence[str]], version_2: bool = False
) -> dict[str, float]:
    """exact_match and f1 (0..1, mean over questions, best over gold answers); for SQuAD v2.0
    also HasAns_/NoAns_ exact and f1 and their counts (questions without answers are the
    unanswerable ones)."""
    exact, f1, has_answer = [], [], []
    for prediction, golds in zip(predictions, answers, strict=True):
        golds = gold_answers(golds)
        exact.append(max(exact_match(prediction, g) for g in golds))
        f1.append(max(f1_score(prediction, g) for g in golds))
        has_answer.append(golds != [""])
    scores = {
        "exact_match": float(np.mean(exact)) if exact else 0.0,
        "f1": float(np.mean(f1)) if f1 else 0.0,
    }
    if version_2:
        mask = np.asarray(has_answer, dtype=bool)
        for name, keep in (("HasAns", mask), ("NoAns", ~mask)):
            scores[f"{name}_total"] = float(keep.sum())
            if keep.any():
                scores[f"{name}_exact"] = float(np.asarray(exact)[keep].mean())
                scores[f"{name}_f1"] = float(np.asarray(f1)[keep].mean())
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


def _locate(context: str, text: str, start: int) -> int | None:
    """The offset of ``text`` in ``context``: ``start`` if it is there, else the occurrence
    nearest to it, else None."""
    if context[start : start + len(text)] == text:
        return start
    found = [m.start() for m in re.finditer(re.escape(text), context)]
    if not found:
        return None
    return min(found, key=lambda at: abs(at - start))


def read_squad(path: Path, check_offsets: bool = True) -> SquadFile:
    """Questions of a SQuAD v1.1/v2.0 JSON file as rows ``id, title, context, question,
    answers={text, answer_start}``. With ``check_offsets`` (training data), an answer whose text
    is not at its offset is moved to the nearest occurrence of the text (counted in
    ``repaired``) and one whose text is nowhere in the context is dropped from that question
    (counted in ``unmatched``); without it every answer is kept as given."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(
            f"{path} is not in the SQuAD layout: expected an object with a 'data' list of "
            "articles, each with 'title' and 'paragraphs' [{context, qas: [{id, question, "
            "answers: [{text, answer_start}]}]}]."
        )
    out = SquadFile(version=str(data.get("version", "")), rows=[])
    for a, article in enumerate(data["data"]):
        title = str(article.get("title", f"article-{a}"))
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise DataError(f"{path}: a paragraph of article '{title}' has no 'context' text.")
            for qa in paragraph.get("qas", []):
                if "question" not in qa or "id" not in qa:
                    raise DataError(
                        f"{path}: a question of article '{title}' lacks 'id' or 'question'."
                    )
                texts, starts = [], []
                moved = False
                for answer in qa.get("answers", []):
                    text, start = str(answer.get("text", "")), int(answer.get("answer_start", -1))
                    at = _locate(context, text, start) if check_offsets else start
                    if at is None:
                        out.unmatched.append(str(qa["id"]))
                        continue
                    moved = moved or at != start
                    texts.append(text)
                    starts.append(at)
                if moved:
                    out.repaired.append(str(qa["id"]))
                if qa.get("is_impossible"):
                    texts, starts = [], []
                out.rows.append(
                    {
                        "id": str(qa["id"]),
                        "title": title,
                        "context": context,
                        "question": qa["question"],
                        "answers": {"text": texts, "answer_start": starts},
                        "impossible": bool(qa.get("is_impossible", False)),
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
    score when answering nothing).

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
    if allow_null and (best_score == -np.inf or null_score - best_score > null_threshold):
        return "", null_score
    return best_text, best_score
