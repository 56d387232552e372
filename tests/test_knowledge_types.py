"""The knowledge types beyond logits/hidden/attention-KL: hand computations of every new loss,
the per-layer module resolver, the schedules, and all types at once on real tiny models."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from conftest import naive_group_heads, tiny_mpnet
from pydantic import ValidationError

from kdformer.config import DistillConfig
from kdformer.config.base import ConfigError
from kdformer.config.knowledge import (
    AttentionConfig,
    EmbeddingConfig,
    HiddenConfig,
    IntermediateConfig,
    LogitsConfig,
    QKVRelationsConfig,
    SentenceEmbeddingConfig,
    SimilarityConfig,
    ValueRelationConfig,
)
from kdformer.features import (
    FeatureNeeds,
    Features,
    extract_features,
    prepare_model,
    resolve_layer_modules,
)
from kdformer.knowledge import KNOWLEDGE, ModelShape
from kdformer.knowledge.attention import AttentionKnowledge, attention_score_mse
from kdformer.knowledge.embedding import EmbeddingKnowledge
from kdformer.knowledge.hidden import HiddenKnowledge, cls_pkd
from kdformer.knowledge.intermediate import IntermediateKnowledge
from kdformer.knowledge.layers import scaled_dot
from kdformer.knowledge.logits import LogitsKnowledge
from kdformer.knowledge.relations import (
    QKVRelationsKnowledge,
    ValueRelationKnowledge,
    relation_kl,
    relation_log_probs,
)
from kdformer.objective import DistillationObjective
from kdformer.tasks.classification import ClassificationTask
from kdformer.teacher import LiveTeacher
from kdformer.training import DistillationModel, DistillationTrainer


def shape(layers=4, hidden=32, heads=4, intermediate=64, labels=2) -> ModelShape:
    return ModelShape(layers, hidden, heads, intermediate, labels)


def close(actual: torch.Tensor, expected: float, tol: float = 1e-5) -> bool:
    return abs(float(actual.detach()) - expected) < tol


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


# Naive references: plain Python loops over examples, heads and positions, no library loss.


def naive_scores(x: torch.Tensor, y: torch.Tensor, heads: int) -> list:
    """scores[b][h][i][j] = sum_c x[b][i][h*d + c] * y[b][j][h*d + c] / sqrt(d), d = width/heads."""
    xs, ys = x.tolist(), y.tolist()
    d = len(xs[0][0]) // heads
    return [
        [
            [
                [sum(xi[h * d + c] * yj[h * d + c] for c in range(d)) / math.sqrt(d) for yj in yb]
                for xi in xb
            ]
            for h in range(heads)
        ]
        for xb, yb in zip(xs, ys, strict=True)
    ]


def naive_softmax_rows(scores: list, mask: list[list[int]]) -> list:
    """Each row's softmax over the example's real keys (math.exp); padded keys get 0."""
    out = []
    for per_head, row_mask in zip(scores, mask, strict=True):
        heads = []
        for rows in per_head:
            probs = []
            for row in rows:
                exps = [math.exp(v) if real else 0.0 for v, real in zip(row, row_mask, strict=True)]
                probs.append([e / sum(exps) for e in exps])
            heads.append(probs)
        out.append(heads)
    return out


def naive_mean_kl(student: list, teacher: list, mask: list[list[int]]) -> float:
    """KL(teacher || student) of every (example, head, real query) row, averaged."""
    total, count = 0.0, 0
    for s_heads, t_heads, row_mask in zip(student, teacher, mask, strict=True):
        for s_rows, t_rows in zip(s_heads, t_heads, strict=True):
            for s_row, t_row, real in zip(s_rows, t_rows, row_mask, strict=True):
                if real:
                    total += kl(t_row, s_row)
                    count += 1
    return total / count


def naive_score_mse(student: list, teacher: list, mask: list[list[int]]) -> float:
    """TinyBERT: per (example, head, real query) row, the mean over real keys of the squared
    score difference; averaged over those rows."""
    total, count = 0.0, 0
    for s_heads, t_heads, row_mask in zip(student, teacher, mask, strict=True):
        real = [j for j, m in enumerate(row_mask) if m]
        for s_rows, t_rows in zip(s_heads, t_heads, strict=True):
            for i in real:
                total += sum((s_rows[i][j] - t_rows[i][j]) ** 2 for j in real) / len(real)
                count += 1
    return total / count


OUTPUTS = ClassificationTask.outputs


def layer_features(modules: dict, hidden: tuple | None = None) -> Features:
    return Features(
        outputs={"logits": torch.zeros(1, 2)}, hidden_states=hidden, layer_modules=modules
    )


def masked(mask) -> dict:
    return {"attention_mask": mask}


# --------------------------------------------------------------------------------------------
# embedding
# --------------------------------------------------------------------------------------------


def test_embedding_mse_by_hand_on_real_tokens():
    term = EmbeddingKnowledge(EmbeddingConfig(), shape(hidden=2), shape(hidden=2))
    assert list(term.parameters()) == []
    student = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [1e3, -1e3]]])  # last token is padding
    teacher = torch.zeros(1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    s = layer_features({}, (student, torch.full((1, 3, 2), 9.0)))
    t = layer_features({}, (teacher, torch.zeros(1, 3, 2)))
    assert close(term(s, t, masked(mask)), (1 + 1 + 4 + 0) / 4)  # embeddings only: layer 1 ignored


def test_embedding_projection_when_widths_differ():
    term = EmbeddingKnowledge(EmbeddingConfig(), shape(hidden=32), shape(hidden=16))
    assert term.projections[0].weight.shape == (32, 16)
    with torch.no_grad():
        term.projections[0].weight.zero_()
        term.projections[0].bias.fill_(1.0)
    s = layer_features({}, (torch.randn(1, 3, 16),))
    t = layer_features({}, (torch.zeros(1, 3, 32),))
    assert close(term(s, t, {}), 1.0)
    assert (
        len(EmbeddingKnowledge(EmbeddingConfig(projection="linear"), shape(), shape()).projections)
        == 1
    )
    with pytest.raises(ConfigError, match="16 wide"):
        EmbeddingKnowledge(EmbeddingConfig(projection="none"), shape(hidden=32), shape(hidden=16))


# --------------------------------------------------------------------------------------------
# hidden: BERT-PKD
# --------------------------------------------------------------------------------------------


def test_cls_pkd_by_hand_uses_normalised_first_token_only():
    student = torch.tensor([[[3.0, 4.0], [7.0, 7.0]], [[0.0, 2.0], [1.0, 1.0]]])
    teacher = torch.tensor([[[5.0, 0.0], [-1.0, 2.0]], [[0.0, 9.0], [0.0, 0.0]]])
    # example 1: [0.6, 0.8] vs [1, 0] -> 0.16 + 0.64; example 2: parallel -> 0
    assert close(cls_pkd(student, teacher, torch.ones(2, 2)), (0.8 + 0.0) / 2)


def test_hidden_pkd_term_averages_matched_layers_with_projection():
    term = HiddenKnowledge(HiddenConfig(loss="pkd"), shape(4, 4), shape(2, 2))
    assert len(term.projections) == 2
    with torch.no_grad():  # project [a, b] -> [a, b, 0, 0]
        for linear in term.projections:
            linear.weight.copy_(torch.eye(4, 2))
            linear.bias.zero_()
    zeros = torch.zeros(1, 2, 4)
    teacher = [zeros] * 5
    teacher[2] = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])  # layer 2 <-> 1
    teacher[4] = torch.tensor([[[0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]])  # layer 4 <-> 2
    student = [torch.zeros(1, 2, 2)] * 3
    student[1] = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])  # equal direction: 0
    student[2] = torch.tensor([[[0.0, 3.0], [5.0, 5.0]]])  # orthogonal: 2
    loss = term(layer_features({}, tuple(student)), layer_features({}, tuple(teacher)), {})
    assert close(loss, (0.0 + 2.0) / 2)


# --------------------------------------------------------------------------------------------
# attention: TinyBERT score MSE
# --------------------------------------------------------------------------------------------


def test_attention_score_mse_by_hand_masks_padding():
    # one example, one head, 3 tokens of which the last is padding
    student = torch.tensor([[[[1.0, 2.0, 50.0], [0.0, 0.0, -7.0], [9.0, 9.0, 9.0]]]])
    teacher = torch.tensor([[[[0.0, 0.0, -50.0], [2.0, 0.0, 1e4], [0.0, 0.0, 0.0]]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    expected = ((1 + 4) / 2 + (4 + 0) / 2) / 2  # rows: mean over 2 real keys; 2 real queries
    assert close(attention_score_mse(student, teacher, mask), expected)
    garbage = teacher.clone()
    garbage[..., 2] = float("inf")
    garbage[..., 2, :] = -3.0
    assert close(attention_score_mse(student, garbage, mask), expected)


def test_scaled_dot_rebuilds_the_models_own_attention(make_bert, batch):
    """softmax(Q K^T / sqrt(d) + mask) from the hooked projections equals the eager maps."""
    model = make_bert(layers=2, hidden=32, heads=4)
    needs = FeatureNeeds(layer_modules=frozenset({("query", 2), ("key", 2)}))
    prepare_model(model, needs)
    features = extract_features(model, batch, needs)
    scores = scaled_dot(features.layer_modules[("query", 2)], features.layer_modules[("key", 2)], 4)
    keys = batch["attention_mask"][:, None, None, :].bool()
    probs = torch.softmax(scores.masked_fill(~keys, float("-inf")), -1)
    model.set_attn_implementation("eager")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    maps = model(**inputs, output_attentions=True).attentions
    assert torch.allclose(probs, maps[1], atol=1e-5)


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_attention_of_a_student_equal_to_its_teacher_is_zero_in_train_mode(
    make_config, batch, loss
):
    """Attention dropout never enters: the maps come from the hooked Q/K, not from the
    (dropped-out) maps a model in train mode returns, so an identical student scores 0."""
    config = make_config(layers=2, hidden=32, heads=4)
    config.attention_probs_dropout_prob = 0.5
    config.hidden_dropout_prob = 0.0
    torch.manual_seed(0)
    teacher = transformers.BertForSequenceClassification(config)
    student = transformers.BertForSequenceClassification(config)
    student.load_state_dict(teacher.state_dict())
    student.train()
    objective = DistillationObjective(
        [AttentionConfig(loss=loss)], teacher.config, student.config, OUTPUTS
    )
    model = DistillationModel(student, objective, LiveTeacher(teacher, objective.needs))
    model(**batch)
    assert float(model.last_terms["attention"]) == pytest.approx(0.0, abs=1e-6)


def qk_features(layers: int, width: int, seq: int = 3, seed: int = 0) -> Features:
    g = torch.Generator().manual_seed(seed)
    modules = {
        (kind, layer): torch.randn(2, seq, width, generator=g)
        for layer in range(1, layers + 1)
        for kind in ("query", "key", "value", "intermediate")
    }
    return layer_features(modules)


def test_attention_mse_term_regroups_teacher_heads():
    term = AttentionKnowledge(
        AttentionConfig(loss="mse"), shape(2, 8, heads=4), shape(1, 8, heads=2)
    )
    assert term.needs_for("student").layer_modules == {("query", 1), ("key", 1)}
    assert term.needs_for("teacher").layer_modules == {("query", 2), ("key", 2)}
    assert not term.needs.hidden_states  # only the hooked projections
    student, teacher = qk_features(1, 8), qk_features(2, 8, seed=1)
    s, t = student.layer_modules, teacher.layer_modules
    mask = [[1, 1, 1], [1, 1, 0]]
    # Student layer 1 (2 heads of width 4) <-> teacher layer 2 (4 heads of width 2, averaged
    # in adjacent pairs: teacher heads 0 and 1 -> student head 0, 2 and 3 -> 1).
    expected = naive_score_mse(
        naive_scores(s[("query", 1)], s[("key", 1)], 2),
        naive_group_heads(naive_scores(t[("query", 2)], t[("key", 2)], 4), 2),
        mask,
    )
    assert close(term(student, teacher, masked(torch.tensor(mask))), expected)
    assert expected > 0.1


def test_attention_mse_heads_rules_as_kl():
    with pytest.raises(ConfigError, match="4 heads"):
        AttentionKnowledge(
            AttentionConfig(loss="mse"), shape(2, 12, heads=4), shape(1, 12, heads=3)
        )
    term = AttentionKnowledge(
        AttentionConfig(loss="mse", heads="average"), shape(2, 12, heads=4), shape(1, 12, heads=3)
    )
    student, teacher = qk_features(1, 12), qk_features(2, 12, seed=1)
    s, t = student.layer_modules, teacher.layer_modules
    mask = [[1, 1, 0], [1, 1, 1]]
    expected = naive_score_mse(  # the mean score over all heads, on both sides
        naive_group_heads(naive_scores(s[("query", 1)], s[("key", 1)], 3), 1),
        naive_group_heads(naive_scores(t[("query", 2)], t[("key", 2)], 4), 1),
        mask,
    )
    assert close(term(student, teacher, masked(torch.tensor(mask))), expected)
    assert expected > 0.1


# --------------------------------------------------------------------------------------------
# relations
# --------------------------------------------------------------------------------------------


def test_relation_log_probs_and_kl_by_hand():
    # one head of width 2; tokens x1 = [1, 0], x2 = [0, 1], x3 padding
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [-5.0, 3.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    r2 = math.sqrt(2)
    s_rows = [softmax([1 / r2, 0.0]), softmax([0.0, 1 / r2])]
    t_rows = [softmax([4 / r2, 2 / r2]), softmax([2 / r2, 2 / r2])]
    s_log = relation_log_probs(student, 1, mask)
    assert torch.allclose(s_log[0, 0, :2, :2].exp(), torch.tensor(s_rows), atol=1e-6)
    assert torch.all(s_log[0, 0, :, 2].exp() == 0)  # padded key
    t_probs = relation_log_probs(teacher, 1, mask).exp()
    expected = (kl(t_rows[0], s_rows[0]) + kl(t_rows[1], s_rows[1])) / 2  # padded query ignored
    assert close(relation_kl(s_log, t_probs, mask), expected)


def test_relation_kl_zero_for_equal_and_finite_gradients():
    x = torch.randn(2, 4, 8, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    s_log = relation_log_probs(x, 2, mask)
    assert close(relation_kl(s_log, s_log.detach().exp(), mask), 0.0)
    loss = relation_kl(s_log, relation_log_probs(torch.randn(2, 4, 8), 4, mask).exp()[:, :2], mask)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_value_relation_by_hand_and_head_regrouping():
    term = ValueRelationKnowledge(ValueRelationConfig(), shape(2, 8, heads=4), shape(1, 8, heads=2))
    assert term.needs_for("student").layer_modules == {("value", 1)}  # last_only by default
    assert term.needs_for("teacher").layer_modules == {("value", 2)}
    student, teacher = qk_features(1, 8), qk_features(2, 8, seed=1)
    mask = [[1, 1, 1], [1, 1, 0]]
    v_s, v_t = student.layer_modules[("value", 1)], teacher.layer_modules[("value", 2)]
    # softmax(V_h V_h^T / sqrt(d_h)) per model head; the teacher's 4 heads averaged in pairs.
    s_rel = naive_softmax_rows(naive_scores(v_s, v_s, 2), mask)
    t_rel = naive_group_heads(naive_softmax_rows(naive_scores(v_t, v_t, 4), mask), 2)
    expected = naive_mean_kl(s_rel, t_rel, mask)
    assert close(term(student, teacher, masked(torch.tensor(mask))), expected)
    assert expected > 0.01
    with pytest.raises(ConfigError, match="4 heads"):
        ValueRelationKnowledge(ValueRelationConfig(), shape(2, 12, heads=4), shape(1, 12, heads=3))
    ValueRelationKnowledge(
        ValueRelationConfig(heads="average"), shape(2, 12, heads=4), shape(1, 12, heads=3)
    )


def test_qkv_relations_by_hand_sums_chosen_relations():
    config = QKVRelationsConfig(relation_heads=2, relations=["qq", "vv"])
    term = QKVRelationsKnowledge(config, shape(2, 8), shape(1, 4))
    assert term.needs_for("student").layer_modules == {("query", 1), ("value", 1)}
    assert list(term.parameters()) == []  # no projections although widths differ
    student, teacher = qk_features(1, 4), qk_features(2, 8, seed=1)
    mask = [[1, 1, 0], [1, 1, 1]]
    expected = 0.0
    for kind in ("query", "value"):  # 2 relation heads: of width 2 (student), 4 (teacher)
        x_s, x_t = student.layer_modules[(kind, 1)], teacher.layer_modules[(kind, 2)]
        expected += naive_mean_kl(
            naive_softmax_rows(naive_scores(x_s, x_s, 2), mask),
            naive_softmax_rows(naive_scores(x_t, x_t, 2), mask),
            mask,
        )
    assert close(term(student, teacher, masked(torch.tensor(mask))), expected)
    assert expected > 0.01


@pytest.mark.parametrize("teacher_width, student_width, bad", [(32, 20, "20"), (36, 16, "36")])
def test_qkv_relation_heads_must_divide_both_widths(teacher_width, student_width, bad):
    with pytest.raises(ConfigError) as info:
        QKVRelationsKnowledge(
            QKVRelationsConfig(), shape(4, teacher_width), shape(2, student_width)
        )
    message = str(info.value)
    assert f"teacher width ({teacher_width})" in message
    assert f"student width ({student_width})" in message
    assert f"width ({bad})" in message.split("does not divide")[1]
    # Every value suggested divides both widths.
    suggested = [int(x) for x in message.split("common divisor: ")[1].split(", ")]
    assert suggested and all(teacher_width % d == 0 and student_width % d == 0 for d in suggested)


def test_qkv_relations_config_validation():
    assert QKVRelationsConfig().relations == ["qq", "kk", "vv"]
    assert QKVRelationsConfig().layers == "last_only" == ValueRelationConfig().layers
    with pytest.raises(ValidationError):
        QKVRelationsConfig(relations=[])
    with pytest.raises(ValidationError):
        QKVRelationsConfig(relations=["qq", "qq"])
    with pytest.raises(ConfigError, match="layer 0"):
        QKVRelationsKnowledge(QKVRelationsConfig(layers=[(0, 0)]), shape(), shape())


def test_qkv_relations_do_not_depend_on_the_models_head_split(make_bert, batch):
    """Same weights, 2 vs 4 attention heads: the Q/K/V vectors of layer 1 are identical, so the
    MiniLMv2 loss is too (the value relation, per model head, is not)."""
    teacher = make_bert(seed=0, layers=2, hidden=32, heads=4)
    student_2 = make_bert(seed=1, layers=1, hidden=16, heads=2)
    student_4 = make_bert(seed=2, layers=1, hidden=16, heads=4)
    student_4.load_state_dict(student_2.state_dict())

    def loss(student, knowledge):
        objective = DistillationObjective([knowledge], teacher.config, student.config, OUTPUTS)
        return objective(
            extract_features(student, batch, objective.needs_for("student")),
            LiveTeacher(teacher, objective.needs_for("teacher"))(batch),
            {"attention_mask": batch["attention_mask"]},
        ).loss

    qkv = QKVRelationsConfig(layers=[(1, 2)], relation_heads=4)
    assert float(loss(student_2, qkv).detach()) > 0
    assert torch.allclose(loss(student_2, qkv), loss(student_4, qkv), atol=1e-6)
    value = ValueRelationConfig(layers=[(1, 2)], heads="average")
    assert not torch.allclose(loss(student_2, value), loss(student_4, value))


# --------------------------------------------------------------------------------------------
# intermediate
# --------------------------------------------------------------------------------------------


def test_intermediate_mse_by_hand_and_projection():
    term = IntermediateKnowledge(
        IntermediateConfig(), shape(2, intermediate=3), shape(1, intermediate=3)
    )
    assert list(term.parameters()) == []
    s = layer_features({("intermediate", 1): torch.tensor([[[1.0, 2.0, 0.0], [8.0, 8.0, 8.0]]])})
    t = layer_features({("intermediate", 2): torch.zeros(1, 2, 3)})
    assert close(term(s, t, masked(torch.tensor([[1, 0]]))), (1 + 4 + 0) / 3)
    wide = IntermediateKnowledge(
        IntermediateConfig(), shape(4, intermediate=64), shape(2, intermediate=32)
    )
    assert [p.weight.shape for p in wide.projections] == [(64, 32), (64, 32)]
    shared = IntermediateKnowledge(
        IntermediateConfig(projection="shared"),
        shape(4, intermediate=64),
        shape(2, intermediate=32),
    )
    assert len(shared.projections) == 1
    with pytest.raises(ConfigError, match="32 wide"):
        IntermediateKnowledge(
            IntermediateConfig(projection="none"),
            shape(4, intermediate=64),
            shape(2, intermediate=32),
        )


def test_intermediate_hook_is_the_activated_feed_forward(make_bert, batch):
    model = make_bert(layers=2)
    block = model.bert.encoder.layer[1].intermediate
    dense_out = []
    handle = block.dense.register_forward_hook(lambda _m, _i, out: dense_out.append(out))
    needs = FeatureNeeds(layer_modules=frozenset({("intermediate", 2)}))
    features = extract_features(model, batch, needs)
    handle.remove()
    expected = block.intermediate_act_fn(dense_out[0])
    assert features.layer_modules[("intermediate", 2)].shape == (2, 6, 64)
    assert torch.allclose(features.layer_modules[("intermediate", 2)], expected)


# --------------------------------------------------------------------------------------------
# Per-layer module resolution
# --------------------------------------------------------------------------------------------


def test_resolver_names_bert_modules_with_1_based_layers(make_bert):
    model = make_bert(layers=2)
    resolved = resolve_layer_modules(
        model, {("query", 1), ("value", 2), ("intermediate", 2), ("key", 5)}
    )
    assert resolved == {
        ("query", 1): "bert.encoder.layer.0.attention.self.query",
        ("value", 2): "bert.encoder.layer.1.attention.self.value",
        ("intermediate", 2): "bert.encoder.layer.1.intermediate",
    }  # layer 5 is skipped: the request may be for the other model
    with pytest.raises(ConfigError, match="it has 2 layers"):
        resolve_layer_modules(model, {("key", 5)}, skip_missing_layers=False)


def test_resolver_finds_roberta_layout():
    config = transformers.RobertaConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40,
    )  # fmt: skip
    model = transformers.RobertaForSequenceClassification(config)
    assert resolve_layer_modules(model, {("key", 1)}) == {
        ("key", 1): "roberta.encoder.layer.0.attention.self.key"
    }


def test_model_of_no_declared_family_fails_at_prepare_naming_class_and_families(batch):
    model = tiny_mpnet()
    needs = FeatureNeeds(layer_modules=frozenset({("query", 1)}))
    with pytest.raises(ConfigError) as info:
        prepare_model(model, needs)
    message = str(info.value)
    assert "MPNetForSequenceClassification" in message and "'mpnet'" in message
    assert "BERT (bert)" in message and "DistilBERT (distilbert)" in message
    with pytest.raises(ConfigError, match="mpnet"):
        extract_features(model, batch, needs)


def test_default_terms_request_no_hooks(make_config):
    objective = DistillationObjective(
        [LogitsConfig(), HiddenConfig()], make_config(), make_config(), OUTPUTS
    )
    assert objective.needs == FeatureNeeds(
        outputs=frozenset({"logits"}), hidden_states=True, hidden_layers=frozenset({1, 2, 3, 4})
    )


def test_objective_needs_per_side(make_config):
    objective = DistillationObjective(
        [IntermediateConfig(), QKVRelationsConfig(relations=["kk"])],
        make_config(layers=4),
        make_config(layers=2),
        OUTPUTS,
    )
    assert objective.needs_for("student").layer_modules == {
        ("intermediate", 1), ("intermediate", 2), ("key", 2)
    }  # fmt: skip
    assert objective.needs_for("teacher").layer_modules == {
        ("intermediate", 2), ("intermediate", 4), ("key", 4)
    }  # fmt: skip
    assert objective.needs.layer_modules == (
        objective.needs_for("student").layer_modules | objective.needs_for("teacher").layer_modules
    )


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


def test_temperature_schedule_values_and_validation():
    config = LogitsConfig(temperature=4.0, temperature_end=1.0, temperature_schedule="linear")
    term = LogitsKnowledge(config, shape(), shape(), OUTPUTS)
    for progress, expected in [(0.0, 4.0), (0.5, 2.5), (1.0, 1.0)]:
        term.progress = progress
        assert term.temperature == pytest.approx(expected)
    assert (
        LogitsKnowledge(LogitsConfig(temperature=3.0), shape(), shape(), OUTPUTS).temperature == 3.0
    )
    with pytest.raises(ValidationError, match="needs temperature_end"):
        LogitsConfig(temperature_schedule="linear")
    with pytest.raises(ValidationError, match="only used with temperature_schedule: linear"):
        LogitsConfig(temperature_end=1.0)
    assert DistillConfig(hard_label_weight_end=0.0).hard_label_weight_end == 0.0
    with pytest.raises(ValidationError):
        DistillConfig(hard_label_weight_end=-1)


def test_hard_label_weight_schedule_in_the_objective(make_config):
    objective = DistillationObjective(
        [LogitsConfig()], make_config(), make_config(), OUTPUTS, hard_label_weight=0.0,
        hard_label_weight_end=1.0,
    )  # fmt: skip
    logits = Features(outputs={"logits": torch.tensor([[0.0, 0.0]])})
    batch = {"labels": torch.tensor([1])}
    out = objective(logits, logits, batch)
    assert close(out.loss, 0.0) and close(out.terms["hard_label"], math.log(2))  # still logged
    objective.set_progress(0.5)
    assert close(objective(logits, logits, batch).loss, 0.5 * math.log(2))
    objective.set_progress(7)  # clipped
    assert objective.progress == 1.0 and objective.current_hard_label_weight == 1.0


class RecordingObjective(DistillationObjective):
    """Records the progress, temperature and hard-label weight each training step used."""

    def forward(self, *args, **kwargs):
        if self.training:
            self.seen.append(
                (self.progress, self.terms["logits"].temperature, self.current_hard_label_weight)
            )
        return super().forward(*args, **kwargs)


def test_schedules_follow_training_progress_through_the_callback(make_bert, tmp_path):
    teacher = make_bert(seed=0, layers=2, hidden=16, heads=2, intermediate=32)
    student = make_bert(seed=1, layers=1, hidden=16, heads=2, intermediate=32)
    logits = LogitsConfig(temperature=4.0, temperature_end=2.0, temperature_schedule="linear")
    objective = RecordingObjective(
        [logits], teacher.config, student.config, OUTPUTS, hard_label_weight=1.0,
        hard_label_weight_end=0.0,
    )  # fmt: skip
    objective.seen = []
    model = DistillationModel(student, objective, LiveTeacher(teacher, objective.needs))
    g = torch.Generator().manual_seed(0)
    data = [
        {
            "input_ids": torch.randint(1, 100, (6,), generator=g),
            "attention_mask": torch.ones(6, dtype=torch.long),
            "labels": torch.tensor(i % 2),
        }
        for i in range(8)
    ]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, report_to="none",
        use_cpu=True, save_strategy="no", remove_unused_columns=False, label_names=["labels"],
        disable_tqdm=True, logging_steps=100,
    )  # fmt: skip
    trainer = DistillationTrainer(model=model, args=args, train_dataset=data)
    trainer.train()
    progress = [p for p, _, _ in objective.seen]
    assert progress == [0.0, 0.25, 0.5, 0.75]
    assert objective.seen[0][1:] == pytest.approx((4.0, 1.0))  # progress 0
    assert objective.seen[2][1:] == pytest.approx((3.0, 0.5))  # progress 0.5
    assert objective.progress == 1.0  # after the last step
    assert objective.terms["logits"].temperature == pytest.approx(2.0)
    assert objective.current_hard_label_weight == pytest.approx(0.0)


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------

EVERY_TYPE = [
    LogitsConfig(temperature=4.0, temperature_end=1.0, temperature_schedule="linear"),
    HiddenConfig(include_embeddings=True),
    HiddenConfig(loss="pkd", layers="many_to_one", projection="shared"),
    AttentionConfig(),
    AttentionConfig(loss="mse", layers="many_to_one"),
    EmbeddingConfig(),
    IntermediateConfig(),
    ValueRelationConfig(),
    QKVRelationsConfig(layers="uniform"),
    SentenceEmbeddingConfig(),
    SimilarityConfig(loss="kl"),
]


def test_every_type_is_covered():
    assert {c.type for c in EVERY_TYPE} == set(KNOWLEDGE)


def test_every_knowledge_type_at_once_trains_with_finite_gradients(make_bert, batch):
    teacher = make_bert(seed=0, layers=4, hidden=32, heads=4, intermediate=64)
    student = make_bert(seed=1, layers=2, hidden=16, heads=2, intermediate=32).train()
    objective = DistillationObjective(
        EVERY_TYPE, teacher.config, student.config, OUTPUTS, hard_label_weight=0.5
    )
    model = DistillationModel(student, objective, LiveTeacher(teacher, objective.needs))
    out = model(**batch)
    assert set(model.last_terms) == {*objective.names, "hard_label"}
    assert all(torch.isfinite(v) and v >= 0 for v in model.last_terms.values())
    out["loss"].backward()
    student_grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert len(student_grads) > 0.9 * len(list(student.parameters()))
    assert all(torch.isfinite(g).all() for g in student_grads)
    for name, parameter in objective.named_parameters():  # projections and layer mixers
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())
    assert not any("objective" in k or "mixer" in k for k in student.state_dict())


def test_every_knowledge_type_under_bf16_autocast_gives_float32_losses(make_bert, batch):
    teacher = make_bert(seed=0, layers=4, hidden=32, heads=4, intermediate=64)
    student = make_bert(seed=1, layers=2, hidden=16, heads=2, intermediate=32).train()
    objective = DistillationObjective(EVERY_TYPE, teacher.config, student.config, OUTPUTS, 0.5)
    model = DistillationModel(student, objective, LiveTeacher(teacher, objective.needs))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    for name, value in model.last_terms.items():
        assert value.dtype == torch.float32 and torch.isfinite(value) and value >= 0, name
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
