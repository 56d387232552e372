"""Distilling into a student with its own vocabulary: the aligned path is the ordinary one when
both tokenizers are the same; knowledge that cannot be aligned (and tasks that cannot) is
refused before training; and students with trained 8k vocabularies distilled end to end on
SST-2 (teacher cache, two teachers) and CoNLL-2003, saved as plain transformers folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import transformers
from conftest import CONLL, GLUE, SQUAD, TEXT, needs_data, save_tiny_glue_teacher
from transformers import AutoModel, AutoModelForTokenClassification, AutoTokenizer
from typer.testing import CliRunner

from kdformer import pipeline
from kdformer.alignment import CrossTokenizerCollator, teacher_inputs
from kdformer.cli import app
from kdformer.config import ConfigError, StudentConfig, TrainConfig, load_config
from kdformer.config.knowledge import KNOWLEDGE_CONFIGS
from kdformer.config.tasks.classification import ClassificationTaskConfig
from kdformer.config.tasks.ner import NerTaskConfig
from kdformer.config.tasks.qa import QATaskConfig
from kdformer.distiller import Distiller
from kdformer.features import extract_features
from kdformer.models import load_tokenizer
from kdformer.objective import DistillationObjective
from kdformer.students import build_student
from kdformer.tasks import build_task

ALIGNED = ["logits", "hidden", "embedding", "intermediate", "value_relation", "qkv_relations"]
CONLL_LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    """A tiny BERT (4 x 32) with the real MiniLM tokenizer."""
    return save_tiny_glue_teacher(tmp_path_factory.mktemp("teacher"), max_position_embeddings=512)


def conll_head(folder: Path, lines: int = 60) -> Path:
    """The first sentences of CoNLL-2003's validation file (real data, a quick read)."""
    path = folder / "conll-head.txt"
    path.write_text("\n".join((CONLL / "valid.txt").read_text().splitlines()[:lines]) + "\n")
    return path


def task_and_models(kind: str, teacher_folder: Path, tmp_path: Path):
    """A task, its tiny teacher (random head) and a 2-layer student built from it."""
    if kind == "classification":
        config = ClassificationTaskConfig(
            name="sst2", data_dir=GLUE, max_train_samples=8, max_length=32
        )
        model_class, labels = transformers.BertForSequenceClassification, 2
    elif kind == "ner":
        head = conll_head(tmp_path)
        config = NerTaskConfig(
            train_file=head, eval_file=head, labels=CONLL_LABELS, max_length=16,
            max_train_samples=6,
        )  # fmt: skip
        model_class, labels = transformers.BertForTokenClassification, 9
    else:
        config = QATaskConfig(train_file=SQUAD, max_train_samples=3, max_length=64, doc_stride=24)
        model_class, labels = transformers.BertForQuestionAnswering, 2
    task = build_task(config)
    torch.manual_seed(0)
    shape = transformers.AutoConfig.from_pretrained(teacher_folder, num_labels=labels)
    teacher = model_class(shape).eval()
    student = build_student(teacher, StudentConfig(num_layers=2), task.model_class).eval()
    return task, teacher, student


def first_batch(task, examples, student_tokenizer, teacher_tokenizer=None):
    """The first (up to 8) training features, collated: ordinary, or cross-tokenised."""
    if teacher_tokenizer is None:
        features = task.tokenize(examples, student_tokenizer)
        collate = task.collator(student_tokenizer)
    else:
        features = task.cross_tokenize(examples, student_tokenizer, teacher_tokenizer)
        collate = CrossTokenizerCollator(
            task.collator(student_tokenizer), task.collator(teacher_tokenizer)
        )
    return collate([features[i] for i in range(min(8, len(features)))])


# --------------------------------------------------------------------------------------------
# the aligned path reduces to the ordinary one
# --------------------------------------------------------------------------------------------


@needs_data(GLUE, CONLL, SQUAD)
@pytest.mark.parametrize("kind", ["classification", "ner", "qa"])
def test_the_same_tokenizer_given_as_the_students_gives_the_same_loss(
    kind, teacher_folder, tmp_path
):
    task, teacher, student = task_and_models(kind, teacher_folder, tmp_path)
    tokenizer = load_tokenizer(str(teacher_folder))
    again = load_tokenizer(str(teacher_folder))  # the teacher's tokenizer, given explicitly
    examples = task.load("train")
    plain = first_batch(task, examples, tokenizer)
    crossed = first_batch(task, examples, again, tokenizer)
    assert torch.equal(plain["input_ids"], crossed["input_ids"])
    assert torch.equal(plain["input_ids"], crossed["teacher_input_ids"])
    names = ALIGNED + (["sentence_embedding", "similarity"] if kind == "classification" else [])
    knowledge = [KNOWLEDGE_CONFIGS[name]() for name in names]
    objective = DistillationObjective(
        knowledge, teacher.config, student.config, task.outputs, 0.5, cross_tokenizer=True
    )
    needs = objective.needs
    ordinary = objective(
        extract_features(student, plain, needs), extract_features(teacher, plain, needs), plain
    )
    aligned = objective(
        extract_features(student, crossed, needs),
        extract_features(teacher, teacher_inputs(crossed), needs),
        crossed,
    )
    assert set(aligned.terms) == set(ordinary.terms) == {*names, "hard_label"}
    for name, value in ordinary.terms.items():
        assert torch.allclose(aligned.terms[name], value, rtol=1e-5, atol=1e-7), name
    assert torch.allclose(aligned.loss, ordinary.loss, rtol=1e-5)


@needs_data(GLUE)
def test_a_distiller_with_the_teachers_tokenizer_trains_as_without(teacher_folder, tmp_path):
    task, teacher, _ = task_and_models("classification", teacher_folder, tmp_path)
    tokenizer = load_tokenizer(str(teacher_folder))
    train = TrainConfig(max_steps=2, batch_size=4, logging_steps=1, save_steps=100, report_to=[])
    losses = []
    for index, teacher_tokenizer in enumerate([None, load_tokenizer(str(teacher_folder))]):
        transformers.set_seed(0)
        student = build_student(teacher, StudentConfig(num_layers=2), task.model_class)
        objective = DistillationObjective(
            [KNOWLEDGE_CONFIGS["logits"](), KNOWLEDGE_CONFIGS["hidden"]()],
            teacher.config, student.config, task.outputs, 0.5,
            cross_tokenizer=teacher_tokenizer is not None,
        )  # fmt: skip
        distiller = Distiller(
            student, teacher, objective, task, tokenizer, train, tmp_path / f"run{index}",
            evaluate=False, teacher_tokenizer=teacher_tokenizer,
        )  # fmt: skip
        distiller.train()
        log = distiller.trainer.state.log_history
        losses.append([(e["loss"], e["loss/hidden"]) for e in log if "loss" in e])
    assert len(losses[0]) == 2 and losses[0] == losses[1]


# --------------------------------------------------------------------------------------------
# refused before training
# --------------------------------------------------------------------------------------------


def sst2_config(teacher_folder: Path, out: Path, *overrides: str):
    return load_config(
        "configs/demo.yaml",
        [
            f"output_dir={out}", f"teacher.name={teacher_folder}", "finetune=null",
            f"task={{name: sst2, data_dir: {GLUE}, max_train_samples: 32, max_eval_samples: 8, "
            "max_length: 32}",
            "student.num_layers=2", "export=false", *overrides,
        ],
    )  # fmt: skip


@needs_data(GLUE)
def test_attention_knowledge_is_refused_before_training(teacher_folder, tmp_path):
    config = sst2_config(
        teacher_folder, tmp_path / "run", "student.vocabulary={train: wordpiece, size: 500}",
        "distill.knowledge=[{type: logits}, {type: attention}, {type: hidden}]",
    )  # fmt: skip
    with pytest.raises(ConfigError) as error:
        pipeline.validate(config, ["distill"])
    message = str(error.value)
    assert "student.vocabulary" in message and "attention:" in message
    assert "its own tokens (token x token)" in message and "qkv_relations" in message
    assert not (tmp_path / "run" / "vocabulary").exists()  # refused before anything was trained
    # the same knowledge with the teacher's tokenizer is fine
    pipeline.validate(sst2_config(teacher_folder, tmp_path / "plain"), ["distill"])


@needs_data(GLUE)
def test_a_vocabulary_to_train_for_a_pretrained_student_is_refused(teacher_folder, tmp_path):
    config = sst2_config(
        teacher_folder, tmp_path / "run", "student.vocabulary={train: bpe}",
        "student.init=pretrained", f"student.pretrained={teacher_folder}",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="belong to its own tokenizer"):
        pipeline.validate(config, ["distill"])


@needs_data(TEXT)
def test_raw_text_is_refused_with_the_reason(teacher_folder, tmp_path):
    text = TEXT / "1064_the_masque_of_the_red_death.txt"
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}", f"teacher.name={teacher_folder}",
            f"task={{type: text, files: {text}, max_length: 32, eval_fraction: 0.25, "
            "segment_chars: 500}",
            "student.num_layers=2", "student.vocabulary={train: wordpiece, size: 500}",
            "distill.knowledge=[{type: hidden}]",
        ],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="raw text is packed into blocks"):
        pipeline.validate(config, ["distill"])


@needs_data(GLUE)
def test_the_dry_run_plans_the_student_with_its_own_vocabulary(teacher_folder, tmp_path):
    """Once an IndexError: the planned student had the teacher's rows and read the teacher's
    tokens. Now its embeddings have the vocabulary's rows and the timed batch is cross-tokenised."""
    result = CliRunner().invoke(
        app,
        [
            "distill", "configs/demo.yaml", "--dry-run", f"output_dir={tmp_path / 'run'}",
            f"teacher.name={teacher_folder}", "finetune=null", "student.num_layers=2",
            f"task={{name: sst2, data_dir: {GLUE}, max_train_samples: 64, max_length: 32}}",
            "student.vocabulary={train: wordpiece, size: 500}", "distill.cache=false",
            "distill.train.batch_size=8", "distill.allow_weak_teacher=true",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = " ".join(result.output.split())
    size = int(re.search(r"student vocabulary: (\d+) tokens of its own", out).group(1))
    assert size <= 500
    assert not (tmp_path / "run").exists()  # a dry run writes nothing, not even the vocabulary
    shape = transformers.AutoConfig.from_pretrained(
        teacher_folder, num_hidden_layers=2, vocab_size=size
    )  # the teacher's 4 x 32 cut to 2 layers, with the vocabulary's rows
    expected = transformers.BertForSequenceClassification(shape).num_parameters()
    assert f"student {expected:,};" in out
    assert "step time:" in out and "s/step measured" in out


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------


COMMON = [
    "export=false", "report.memory=false", "report.latency_repeats=2",
    "report.latency_batch_size=2", "report.latency_seq_length=16",
    "distill.allow_weak_teacher=true",
]  # fmt: skip


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.mark.slow
@needs_data(GLUE)
def test_an_8k_vocabulary_student_on_sst2_with_the_cache_and_two_teachers(teacher_folder, tmp_path):
    other = save_tiny_glue_teacher(tmp_path / "other", hidden_size=48, intermediate_size=96)
    out = tmp_path / "sst2"
    run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher_folder}",
        "finetune=null", "student.num_layers=2",
        f"task={{name: sst2, data_dir: {GLUE}, max_train_samples: 8000, max_eval_samples: 32, "
        "max_length: 32}",
        "student.vocabulary={train: wordpiece, size: 8000}",
        f"distill.teachers=[{{id: wide, name: {other}}}]",
        "distill.knowledge=[{type: logits}, {type: hidden}, "
        "{type: qkv_relations, relation_heads: 4, teacher: wide}]",
        f"distill.cache={{enabled: true, dir: {tmp_path / 'cache'}}}",
        "distill.train={max_steps: 4, batch_size: 16, learning_rate: 1e-3, save_steps: 4, "
        "logging_steps: 2, report_to: []}",
        *COMMON,
    )  # fmt: skip
    student = out / "student"
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModel.from_pretrained(student)
    assert len(tokenizer) == 8000 == model.config.vocab_size
    assert model.get_input_embeddings().weight.shape == (8000, 32)
    assert tokenizer.convert_ids_to_tokens(tokenizer("a charming film")["input_ids"]) == [
        "[CLS]", "a", "charming", "film", "[SEP]",
    ]  # fmt: skip
    state = json.loads((out / "checkpoints/student/checkpoint-4/trainer_state.json").read_text())
    logged = {k for entry in state["log_history"] for k in entry}
    assert {"loss/logits", "loss/hidden", "loss/qkv_relations", "loss/hard_label"} <= logged
    # both teachers read their own tokens from the cache, one entry each
    cache = json.loads((student / "training.json").read_text())["teacher_cache"]
    assert set(cache) == {"main", "wide"}
    assert "hidden.4" in cache["main"]["items"] and "layer.query.4" in cache["wide"]["items"]
    assert all(Path(c["entry"]).parent == tmp_path / "cache" for c in cache.values())
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]][:2] == ["teacher", "student"]


@pytest.mark.slow
@needs_data(CONLL)
def test_an_8k_vocabulary_student_on_conll(teacher_folder, tmp_path):
    out = tmp_path / "ner"
    run(
        "run", "configs/demo.yaml", f"output_dir={out}", f"teacher.name={teacher_folder}",
        "student.num_layers=2",
        f"task={{type: ner, data_dir: {CONLL}, max_train_samples: 1500, max_eval_samples: 32, "
        "max_length: 48}",
        "finetune={max_steps: 4, batch_size: 8, learning_rate: 1e-3, save_steps: 100, "
        "report_to: []}",
        "student.vocabulary={train: wordpiece, size: 8000}",
        "distill.knowledge=[{type: logits}, {type: hidden}, {type: value_relation}]",
        "distill.train={max_steps: 4, batch_size: 8, learning_rate: 1e-3, save_steps: 100, "
        "logging_steps: 2, report_to: []}",
        *COMMON,
    )  # fmt: skip
    student = out / "student"
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModelForTokenClassification.from_pretrained(student)
    # 1,500 CoNLL sentences hold too few words for 8,000 tokens: the trainer stops at 4,684
    assert 4000 < len(tokenizer) <= 8000 and model.config.vocab_size == len(tokenizer)
    assert model.config.num_labels == 9 and model.config.id2label[0] == "O"
    words = ["EU", "rejects", "German", "call"]
    batch = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    assert model(**batch).logits.shape[-1] == 9
    report = json.loads((out / "report.json").read_text())
    assert "f1" in report["models"][1]["metrics"]
    teacher_vocab = load_tokenizer(str(teacher_folder)).get_vocab()
    assert tokenizer.get_vocab() != teacher_vocab
