"""End-to-end CLI runs of every task on tiny models and small slices of the real data:
NER (CoNLL-2003 sentences, LitBank documents), extractive QA (SQuAD split by article), raw
text (with and without an MLM head) and the two-stage pipeline; plus the bad input each task
must refuse before any training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from conftest import CONLL, GLUE, LITBANK, SQUAD, TEXT, needs_data, save_tiny_glue_teacher
from test_scoring_batches import gold_spans, ner_oracle, qa_oracle
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config import load_config
from kdformer.tasks import Task, build_task
from kdformer.tasks.evaluation import evaluate_model

runner = CliRunner()
SMALL_TEXT = TEXT / "1064_the_masque_of_the_red_death.txt"
COMMON = [
    "student.num_layers=2",
    "report.latency_repeats=2",
    "report.memory=false",
    "export=false",
    "report.latency_batch_size=2",
    "report.latency_seq_length=32",
    "distill.allow_weak_teacher=true",  # a few steps teach a tiny teacher nothing
]
FINETUNE = (
    "finetune={max_steps: 4, batch_size: 8, learning_rate: 1e-3, save_steps: 100, report_to: []}"
)
DISTILL = (
    "distill.train={max_steps: 4, batch_size: 8, learning_rate: 1e-3, save_steps: 2, "
    "logging_steps: 2, report_to: []}"
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny BERT (4 x 32) with the real MiniLM tokenizer and 512 positions."""
    return save_tiny_glue_teacher(tmp_path_factory.mktemp("teacher"), max_position_embeddings=512)


def run(*args: str) -> object:
    return runner.invoke(app, list(args))


def said(result) -> str:
    """The command's output with line wrapping undone."""
    return " ".join(result.output.split())


def report_of(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def run_task(folder: Path) -> tuple[Task, Any, Any]:
    """The task of a finished run (from its student's saved config), its evaluation examples
    and the student's tokenizer: what the run's report was scored with."""
    config = load_config(folder / "student" / "kdformer_config.yaml")
    assert config.distill.train.eval_batch_size == 5
    task = build_task(config.task, config.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder / "student")
    return task, task.load("eval"), tokenizer


def assert_reported(reported: dict[str, float], scores: dict[str, float]) -> None:
    """The report's metrics of a model are ``scores``, every one of them."""
    assert set(scores) <= set(reported)
    assert {name: reported[name] for name in scores} == pytest.approx(scores)


# --------------------------------------------------------------------------------------------
# NER
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_data(CONLL)
def test_ner_on_conll2003(teacher, tmp_path):
    out = tmp_path / "ner"
    result = run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher}",
        f"task={{type: ner, data_dir: {CONLL}, max_train_samples: 64, max_eval_samples: 48, max_length: 48}}",
        FINETUNE, DISTILL, "distill.train.eval_batch_size=5", *COMMON,
        "distill.knowledge=[{type: logits}, {type: hidden}, {type: attention}, {type: qkv_relations, relation_heads: 4}]",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = report_of(out)
    assert report["task"] == "conll2003" and report["main_metric"] == "f1"
    assert report["eval_examples"] == 48 and report["baseline"]["name"] == "all O"
    assert report["baseline"]["metrics"]["f1"] == 0.0
    student = report["models"][1]
    assert {"f1", "precision", "recall", "accuracy"} <= set(student["metrics"])
    model = transformers.AutoModelForTokenClassification.from_pretrained(out / "student")
    task, examples, tokenizer = run_task(out)
    assert report["baseline"]["metrics"] == pytest.approx(task.baseline(examples, examples))
    # The report scored the student in batches of 5 sentences; the same loop over the same
    # batches gives its numbers again, and a model tagging every word with its gold tag 1.
    assert_reported(student["metrics"], evaluate_model(model, task, examples, tokenizer, 5, "cpu"))
    oracle = ner_oracle(task, examples, tokenizer, lambda i: examples[i]["tags"])
    scores = evaluate_model(oracle, task, examples, tokenizer, 5, "cpu")
    assert set(scores.values()) == {1.0} and len(oracle.widths) == -(-oracle.windows // 5)
    assert model.config.id2label[0] == "O" and model.config.num_labels == 9
    assert "AutoModelForTokenClassification" in (out / "student" / "README.md").read_text()
    state = json.loads((out / "checkpoints/student/checkpoint-4/trainer_state.json").read_text())
    logged = {k for entry in state["log_history"] for k in entry}
    assert {"loss/logits", "loss/attention", "loss/qkv_relations", "loss/hard_label"} <= logged


@pytest.mark.slow
@needs_data(LITBANK)
def test_ner_on_whole_litbank_documents(teacher, tmp_path):
    out = tmp_path / "litbank"
    result = run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher}",
        f"task={{type: ner, name: litbank, data_dir: {LITBANK}, unit: document, max_length: 128, "
        "max_train_samples: 3, max_eval_samples: 2}",
        FINETUNE, DISTILL, *COMMON,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = report_of(out)
    assert report["task"] == "litbank" and report["eval_examples"] == 2
    assert "f1" in report["models"][1]["metrics"]


@needs_data(CONLL)
def test_malformed_conll_is_refused_before_training(teacher, tmp_path):
    folder = tmp_path / "conll"
    folder.mkdir()
    lines = (CONLL / "train.txt").read_text().splitlines()[:40]
    lines[12] = "Peter NNP"  # lost its chunk and NER columns... now tag column = "NNP"
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "valid.txt").write_text("\n".join(lines[:10]) + "\n")
    out = tmp_path / "out"
    result = run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher}",
        f"task={{type: ner, data_dir: {folder}}}", FINETUNE, DISTILL, *COMMON,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "train.txt:13: 'NNP'" in said(result) and "not an IOB tag" in said(result)
    assert not out.exists(), "the data is checked before anything is written"


# --------------------------------------------------------------------------------------------
# Extractive QA
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_data(SQUAD)
def test_qa_on_squad_split_by_article(teacher, tmp_path):
    out = tmp_path / "qa"
    result = run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher}",
        f"task={{type: qa, train_file: {SQUAD}, max_length: 96, max_train_samples: 48, "
        "max_eval_samples: 24}",
        FINETUNE, DISTILL, "distill.train.eval_batch_size=5", *COMMON,
        "distill.knowledge=[{type: logits}, {type: hidden}]",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = report_of(out)
    assert report["task"] == "squad" and report["main_metric"] == "f1"
    assert report["baseline"]["name"] == "first words" and report["eval_examples"] == 24
    assert {"exact_match", "f1"} <= set(report["models"][1]["metrics"])
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(out / "student")
    task, examples, tokenizer = run_task(out)
    assert report["baseline"]["metrics"] == pytest.approx(
        task.baseline(task.load("train"), examples)
    )
    # The report scored the student in batches of 5 windows; the same loop over the same
    # batches gives its numbers again, and a model that points at each gold answer 1.
    metrics = evaluate_model(model, task, examples, tokenizer, 5, "cpu")
    assert_reported(report["models"][1]["metrics"], metrics)
    oracle = qa_oracle(task, examples, tokenizer, gold_spans(examples))
    scores = evaluate_model(oracle, task, examples, tokenizer, 5, "cpu")
    assert scores == {"exact_match": 1.0, "f1": 1.0}
    assert oracle.windows > len(examples), "some questions span several windows"
    assert "split by article" in said(result)


# --------------------------------------------------------------------------------------------
# Raw text and two stages
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_data(SMALL_TEXT)
def test_distill_on_raw_text_gives_a_general_encoder(teacher, tmp_path):
    out = tmp_path / "general"
    result = run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher}", "finetune=null",
        f"task={{type: text, files: {SMALL_TEXT}, max_length: 64, eval_fraction: 0.25, segment_chars: 1000}}",
        DISTILL, *COMMON,
        "distill.knowledge=[{type: hidden}, {type: qkv_relations, relation_heads: 4}]",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = report_of(out)
    assert report["main_metric"] is None and set(report["held_out"]) == {
        "loss", "loss/hidden", "loss/qkv_relations"
    }  # fmt: skip
    model = transformers.AutoModel.from_pretrained(out / "student")
    assert type(model).__name__ == "BertModel" and model.config.num_hidden_layers == 2
    assert "encoder features (no MLM head)" in said(result)


@pytest.mark.slow
@needs_data(SMALL_TEXT)
def test_raw_text_with_an_mlm_teacher_distils_its_predictions(tmp_path):
    teacher = tmp_path / "mlm"
    tokenizer_source = save_tiny_glue_teacher(tmp_path / "tok")
    config = transformers.BertConfig.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(teacher)
    transformers.AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(teacher)
    out = tmp_path / "out"
    result = run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher}", "finetune=null",
        f"task={{type: text, files: {SMALL_TEXT}, max_length: 64, eval_fraction: 0.25, segment_chars: 1000}}",
        DISTILL, *COMMON, "distill.knowledge=[{type: logits}, {type: hidden}]",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = report_of(out)
    assert report["main_metric"] == "mlm_accuracy"
    assert {"mlm_accuracy", "perplexity"} <= set(report["models"][1]["metrics"])
    transformers.AutoModelForMaskedLM.from_pretrained(out / "student")
    assert "AutoModelForMaskedLM.from_pretrained" in (out / "student" / "README.md").read_text()


@pytest.mark.slow
@needs_data(GLUE, SMALL_TEXT)
def test_two_stage_run_reports_a_one_stage_student_at_the_same_compute(teacher, tmp_path):
    out = tmp_path / "two"
    result = run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher}",
        f"task.data_dir={GLUE}", "task.max_train_samples=64", "task.max_eval_samples=32",
        "task.max_length=32", FINETUNE, DISTILL, *COMMON,
        f"general={{task: {{files: {SMALL_TEXT}, max_length: 64, eval_fraction: 0.25, "
        "segment_chars: 1000}, train: {max_steps: 3, batch_size: 4, report_to: []}, "
        "knowledge: [{type: hidden}, {type: qkv_relations, relation_heads: 4}]}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = report_of(out)
    names = [m["name"] for m in report["models"]]
    assert names == ["teacher", "two-stage student", "one-stage student"]
    compute = report["two_stage"]
    assert compute["general_steps"] == 3 and compute["general_tokens"] == 3 * 4 * 64
    per_step = compute["task_tokens"] / compute["task_steps"]
    assert compute["one_stage_steps"] == 4 + -(-compute["general_tokens"] // per_step)
    general = json.loads((out / "general/student/training.json").read_text())
    assert general["steps"] == 3
    stage_two = (out / "student/kdformer_config.yaml").read_text()
    assert "init: pretrained" in stage_two and str(out / "general" / "student") in stage_two
    one_stage = json.loads((out / "one_stage/student/training.json").read_text())
    assert one_stage["steps"] == compute["one_stage_steps"]


# --------------------------------------------------------------------------------------------
# Bad input before long work
# --------------------------------------------------------------------------------------------


@needs_data(GLUE)
def test_max_length_over_the_position_limit(tmp_path):
    short = save_tiny_glue_teacher(tmp_path / "short", max_position_embeddings=64)
    result = run(
        "run", "configs/demo.yaml", f"output_dir={tmp_path / 'out'}", f"teacher.name={short}",
        f"task.data_dir={GLUE}", "task.max_length=128", FINETUNE, DISTILL, *COMMON,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "task.max_length 128 is over the position limit" in said(result)
    assert "(64 tokens)" in said(result) and not (tmp_path / "out").exists()


def test_a_task_section_with_fields_of_another_task(tmp_path):
    result = run("config", "show", "configs/demo.yaml", "task={type: ner, doc_stride: 64}")
    assert result.exit_code == 2
    assert "'task.doc_stride' is a field of task type 'qa', not of 'ner'" in said(result)


@needs_data(CONLL)
def test_a_teacher_head_without_the_datas_tags(teacher, tmp_path):
    head = tmp_path / "head"
    model = transformers.AutoModelForTokenClassification.from_pretrained(
        teacher, num_labels=3, id2label={0: "O", 1: "B-PER", 2: "I-PER"},
        label2id={"O": 0, "B-PER": 1, "I-PER": 2}, ignore_mismatched_sizes=True,
    )  # fmt: skip
    model.save_pretrained(head)
    transformers.AutoTokenizer.from_pretrained(teacher).save_pretrained(head)
    result = run(
        "distill", "configs/demo.yaml", f"output_dir={tmp_path / 'out'}", f"teacher.name={head}",
        "finetune=null", f"task={{type: ner, data_dir: {CONLL}, max_train_samples: 32}}",
        DISTILL, *COMMON,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "B-LOC" in said(result) and "that the model's head lacks" in said(result)


@pytest.mark.slow
@needs_data(SMALL_TEXT)
def test_an_interrupted_mlm_student_resumes_with_its_tied_weights(tmp_path):
    """A masked LM's decoder is its word embeddings: saved once in the checkpoint, tied again
    on resume."""
    from kdformer import pipeline
    from kdformer.config import load_config

    teacher = tmp_path / "mlm"
    source = save_tiny_glue_teacher(tmp_path / "tok")
    torch.manual_seed(0)
    transformers.BertForMaskedLM(transformers.BertConfig.from_pretrained(source)).save_pretrained(
        teacher
    )
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(teacher)
    config = load_config(
        "configs/demo.yaml",
        [
            f"output_dir={tmp_path / 'out'}", f"teacher.name={teacher}", "finetune=null",
            f"task={{type: text, files: {SMALL_TEXT}, max_length: 32, eval_fraction: 0.25, segment_chars: 500}}",
            "distill.train={max_steps: 4, batch_size: 4, save_steps: 2, report_to: []}",
            "distill.knowledge=[{type: logits}]", *COMMON,
        ],
    )  # fmt: skip

    class Stop(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.distill(config, callbacks=[Stop()])
    pipeline.distill(config, resume=True)
    student = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out/student")
    assert student.cls.predictions.decoder.weight.data_ptr() == (
        student.bert.embeddings.word_embeddings.weight.data_ptr()
    )
