"""Long-context extractive QA data as publishers lay it out, read into SQuAD rows (``id,
title, context, question, answers={text, answer_start}, impossible``) so the QA task windows,
scores and distils them like SQuAD.

* HotpotQA (distractor setting): the 10 paragraphs joined as one context (``title`` line, then
  the paragraph's sentences), in the official layout (``_id``, ``context: [[title,
  [sentences]]]``, ``supporting_facts: [[title, sent_id]]``) or the Hugging Face one
  (``context: {title: [], sentences: [[]]}``). A span answer is located in the context,
  preferring an occurrence inside a supporting sentence. Yes/no answers (comparison questions)
  have no span: extractive QA has no answer-type head, so they are left out and counted.
* TriviaQA (reading comprehension): the official layout (``{"Data": [{QuestionId, Question,
  Answer: {Value, Aliases}, EntityPages: [{Filename}], SearchResults: [...]}]}`` with evidence
  files under ``evidence_dir``) or the Hugging Face one (``entity_pages.wiki_context``). The
  evidence documents are joined; the training span is the first occurrence of any alias
  (distant supervision, as the TriviaQA baselines do); evaluation scores against every alias.
* Long SQuAD: the paragraphs of each SQuAD article joined (answer offsets shifted), see
  :func:`join_articles`: 2,943-17,512 word pieces per article on the local dev file; or each
  question's paragraph among a few others of its article, see :func:`add_distractors`.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdformer.config.base import DataError
from kdformer.tasks.squad import is_row_layout, load_json

PARAGRAPH_SEPARATOR = "\n\n"


@dataclass
class LongQAFile:
    """Rows in the SQuAD row layout, and what was left out (ids) and why."""

    rows: list[dict[str, Any]]
    yes_no: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)


def _field(record: dict[str, Any], key: str) -> Any:
    """A field that the Hugging Face export may have stored as a Python-literal string."""
    value = record.get(key)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _hotpot_paragraphs(record: dict[str, Any]) -> list[tuple[str, list[str]]]:
    context = _field(record, "context")
    if isinstance(context, dict):  # Hugging Face: {title: [...], sentences: [[...]]}
        return list(zip(context["title"], context["sentences"], strict=True))
    return [(str(title), list(sentences)) for title, sentences in context]


def _hotpot_support(record: dict[str, Any]) -> set[tuple[str, int]]:
    support = _field(record, "supporting_facts") or []
    if isinstance(support, dict):
        return set(zip(support["title"], (int(i) for i in support["sent_id"]), strict=True))
    return {(str(title), int(i)) for title, i in support}


def read_hotpotqa(path: Path) -> LongQAFile:
    """HotpotQA distractor questions as long-context SQuAD rows (see the module docstring)."""
    data = load_json(path)
    if not isinstance(data, list) or not data or "question" not in data[0]:
        raise DataError(
            f"{path} is not in the HotpotQA layout: expected a list of questions with "
            "'question', 'answer', 'context' (10 titled paragraphs) and 'supporting_facts'"
        )
    out = LongQAFile(rows=[])
    for n, record in enumerate(data):
        qid = str(record.get("_id") or record.get("id") or f"hotpot-{n}")
        answer = str(record.get("answer") or "")
        if not answer.strip():
            out.unanswered.append(qid)
            continue
        if answer.lower() in ("yes", "no"):
            out.yes_no.append(qid)
            continue
        support = _hotpot_support(record)
        parts, supported_spans, at = [], [], 0
        for title, sentences in _hotpot_paragraphs(record):
            text = f"{title}\n" + "".join(sentences)
            offset = at + len(title) + 1
            for i, sentence in enumerate(sentences):
                if (title, i) in support:
                    supported_spans.append((offset, offset + len(sentence)))
                offset += len(sentence)
            parts.append(text)
            at += len(text) + len(PARAGRAPH_SEPARATOR)
        context = PARAGRAPH_SEPARATOR.join(parts)
        found = [m.start() for m in re.finditer(re.escape(answer), context)] if answer else []
        if not found:
            out.unmatched.append(qid)
            continue
        inside = [s for s in found if any(a <= s < b for a, b in supported_spans)]
        start = (inside or found)[0]
        out.rows.append(
            {
                "id": qid,
                "title": qid,  # each question has its own 10 paragraphs
                "context": context,
                "question": str(record["question"]),
                "answers": {"text": [answer], "answer_start": [start]},
                "impossible": False,
            }
        )
    if len(out.unanswered) == len(data):
        raise DataError(
            f"{path}: none of its {len(data)} HotpotQA questions has an answer (no 'answer' "
            "field, or an empty one): is it a test split? Its answers are not published "
            "(hotpot_test_fullwiki_v1.json, or the test split of the hub's hotpot_qa). "
            "Training and evaluation need answers: give the train file (hotpot_train_v1.1.json) "
            "or the dev distractor file (hotpot_dev_distractor_v1.json)."
        )
    return out


def _trivia_records(data: Any, path: Path) -> list[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("Data"), list):
        return data["Data"]
    if isinstance(data, list) and data and "question" in data[0]:
        return data
    raise DataError(
        f"{path} is not in a TriviaQA layout: expected {{'Data': [{{QuestionId, Question, "
        "Answer: {Value, Aliases}, EntityPages: [{Filename}]}}]}} (official) or a list of "
        "{question_id, question, answer: {value, aliases}, entity_pages: {wiki_context}}"
    )


def _trivia_documents(record: dict[str, Any], evidence: Path | None, path: Path) -> list[str]:
    if "EntityPages" in record or "SearchResults" in record:
        if evidence is None:
            raise DataError(
                f"{path} is TriviaQA's official layout, whose evidence documents are separate "
                "files: set task.evidence_dir to the folder holding wikipedia/ (and web/)"
            )
        texts = []
        for kind, key in (("wikipedia", "EntityPages"), ("web", "SearchResults")):
            for page in record.get(key, []) or []:
                file = evidence / kind / page["Filename"]
                if not file.is_file():
                    raise DataError(f"TriviaQA evidence file not found: {file} (from {path})")
                texts.append(file.read_text(encoding="utf-8"))
        return texts
    pages = record.get("entity_pages") or {}
    results = record.get("search_results") or {}
    return list(pages.get("wiki_context", [])) + list(results.get("search_context", []))


def read_triviaqa(path: Path, evidence_dir: Path | None = None) -> LongQAFile:
    """TriviaQA questions with their evidence joined as one long context (see the module
    docstring); a question whose aliases occur nowhere in its evidence is left out (counted)."""
    data = load_json(path)
    out = LongQAFile(rows=[])
    for n, record in enumerate(_trivia_records(data, path)):
        qid = str(record.get("QuestionId") or record.get("question_id") or f"trivia-{n}")
        answer = record.get("Answer") or record.get("answer") or {}
        value = str(answer.get("Value") or answer.get("value") or "")
        aliases = [value, *(answer.get("Aliases") or answer.get("aliases") or [])]
        aliases = list(dict.fromkeys(a for a in aliases if a))
        context = PARAGRAPH_SEPARATOR.join(_trivia_documents(record, evidence_dir, path))
        first = None
        for alias in aliases:
            at = context.find(alias)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, alias)
        if first is None:
            out.unmatched.append(qid)
            continue
        others = [a for a in aliases if a != first[1]]
        out.rows.append(
            {
                "id": qid,
                "title": qid,
                "context": context,
                "question": str(record.get("Question") or record.get("question")),
                # the located alias first (the training span), then every other alias with
                # offset -1: evaluation scores against all of them, training uses the first
                "answers": {
                    "text": [first[1], *others],
                    "answer_start": [first[0]] + [-1] * len(others),
                },
                "impossible": False,
            }
        )
    return out


def _paragraphs_by_article(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each article's distinct paragraphs, in file order."""
    paragraphs: dict[str, list[str]] = {}
    for row in rows:
        known = paragraphs.setdefault(row["title"], [])
        if row["context"] not in known:
            known.append(row["context"])
    return paragraphs


def _in_context(row: dict[str, Any], context: str, delta: int) -> dict[str, Any]:
    """``row`` with its paragraph placed ``delta`` characters into ``context``: every answer
    offset shifted to match (negative offsets, no answer, stay as they are)."""
    answers = row["answers"]
    return {
        **row,
        "context": context,
        "answers": {
            "text": list(answers["text"]),
            "answer_start": [s + delta if s >= 0 else s for s in answers["answer_start"]],
        },
    }


def join_articles(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long SQuAD: each article's paragraphs joined as one context (in file order, separated
    by a blank line) and every answer offset shifted to match; one row per question."""
    rows = list(rows)
    contexts = _paragraphs_by_article(rows)
    shift: dict[tuple[str, str], int] = {}
    joined: dict[str, str] = {}
    for title, paragraphs in contexts.items():
        at = 0
        for paragraph in paragraphs:
            shift[(title, paragraph)] = at
            at += len(paragraph) + len(PARAGRAPH_SEPARATOR)
        joined[title] = PARAGRAPH_SEPARATOR.join(paragraphs)
    return [
        _in_context(row, joined[row["title"]], shift[(row["title"], row["context"])])
        for row in rows
    ]


def add_distractors(rows: Iterable[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """SQuAD in HotpotQA's distractor setting: each question's paragraph joined with ``count``
    other paragraphs of its article (all of them when it has fewer), in a random order drawn
    from ``seed`` and the question id, the answer offsets shifted; one row per question. A
    model trained on these sees answers at every position of a long context, which short
    SQuAD paragraphs (at most 820 word pieces) never show it."""
    rows = list(rows)
    paragraphs = _paragraphs_by_article(rows)
    out = []
    for row in rows:
        draw = random.Random(f"{seed}:{row['id']}")
        others = [p for p in paragraphs[row["title"]] if p != row["context"]]
        chosen = draw.sample(others, min(count, len(others)))
        at = draw.randint(0, len(chosen))
        chosen.insert(at, row["context"])
        delta = sum(len(p) + len(PARAGRAPH_SEPARATOR) for p in chosen[:at])
        out.append(_in_context(row, PARAGRAPH_SEPARATOR.join(chosen), delta))
    return out


def detect_format(path: Path) -> str:
    """``squad``, ``hotpotqa`` or ``triviaqa`` from a JSON file's top-level layout (Hugging
    Face SQuAD rows, a list or JSON lines, are ``squad``)."""
    data = load_json(path)
    if (isinstance(data, dict) and "data" in data) or is_row_layout(data):
        return "squad"
    if isinstance(data, dict) and "Data" in data:
        return "triviaqa"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        # HotpotQA's official test file has no supporting_facts (nor answers): its _id and
        # list of titled paragraphs still say what it is, so it is refused as a test split
        if "supporting_facts" in data[0] or (
            "_id" in data[0] and isinstance(data[0].get("context"), list)
        ):
            return "hotpotqa"
        if "entity_pages" in data[0] or "question_id" in data[0]:
            return "triviaqa"
    raise DataError(
        f"{path}: not a SQuAD, HotpotQA or TriviaQA layout (set task.format to say which)"
    )
