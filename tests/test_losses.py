"""Loss functions against hand computations, and the knowledge terms / objective built on them."""

from __future__ import annotations

import math

import pytest
import torch

from kdformer.configbase import ConfigError
from kdformer.features import Features
from kdformer.knowledge import (
    AttentionConfig,
    AttentionKnowledge,
    HiddenConfig,
    HiddenKnowledge,
    LogitsConfig,
    LogitsKnowledge,
    ModelShape,
)
from kdformer.knowledge.attention import attention_kl, regroup_heads
from kdformer.knowledge.hidden import masked_cosine, masked_mse
from kdformer.knowledge.logits import kl_with_temperature, logits_mse
from kdformer.objective import DistillationObjective, hard_label_loss, term_names

LN3 = math.log(3)


def shape(layers=4, hidden=32, heads=4, labels=2) -> ModelShape:
    return ModelShape(
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        intermediate_size=4 * hidden,
        num_labels=labels,
    )


def close(actual: torch.Tensor, expected: float, tol: float = 1e-6) -> bool:
    return abs(float(actual.detach()) - expected) < tol


# --------------------------------------------------------------------------------------------
# Logits
# --------------------------------------------------------------------------------------------


def test_kl_at_temperature_1_by_hand():
    # teacher softmax([0, ln 3]) = [1/4, 3/4]; student softmax([0, 0]) = [1/2, 1/2]
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    loss = kl_with_temperature(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, LN3]]), 1.0)
    assert close(loss, expected)
    assert close(loss, 0.1308120)


def test_kl_at_temperature_2_includes_t_squared():
    # At T=2 the teacher logits become [0, ln3/2]: p = [1, sqrt3] / (1 + sqrt3)
    p1 = 1 / (1 + math.sqrt(3))
    p2 = 1 - p1
    kl = p1 * math.log(p1 / 0.5) + p2 * math.log(p2 / 0.5)
    loss = kl_with_temperature(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, LN3]]), 2.0)
    assert close(loss, 4 * kl)  # T^2 = 4


def test_kl_is_averaged_over_examples_and_zero_when_equal():
    teacher = torch.tensor([[0.0, LN3], [0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    expected = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) / 2  # second row contributes 0
    assert close(kl_with_temperature(student, teacher, 1.0), expected)
    assert close(kl_with_temperature(teacher, teacher, 3.0), 0.0)


def test_logits_mse_by_hand():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert close(logits_mse(student, torch.zeros(2, 2)), (1 + 4 + 9 + 16) / 4)


# --------------------------------------------------------------------------------------------
# Hidden states
# --------------------------------------------------------------------------------------------

MASK = torch.tensor([[1.0, 1.0, 0.0]])


def with_garbage_padding(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[:, 2] = torch.tensor([1e3, -7e2])
    return y


def test_masked_mse_by_hand_ignores_padding():
    student = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]])
    teacher = torch.zeros(1, 3, 2)
    expected = (1 + 1 + 4 + 4) / (2 * 2)  # 2 real tokens x 2 features
    assert close(masked_mse(student, teacher, MASK), expected)
    assert close(masked_mse(with_garbage_padding(student), teacher, MASK), expected)
    assert close(masked_mse(student, with_garbage_padding(teacher), MASK), expected)


def test_masked_cosine_by_hand_ignores_padding():
    student = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]]])
    expected = ((1 - 0) + (1 - 1)) / 2  # orthogonal, then parallel
    assert close(masked_cosine(student, teacher, MASK), expected)
    assert close(masked_cosine(with_garbage_padding(student), teacher, MASK), expected)
    assert close(masked_cosine(student, with_garbage_padding(teacher), MASK), expected)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def test_attention_kl_zero_when_equal():
    probs = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)
    assert close(attention_kl(probs, probs, torch.ones(2, 4)), 0.0)


def test_attention_kl_two_keys_by_hand():
    teacher = torch.tensor([0.5, 0.5]).view(1, 1, 1, 2)
    student = torch.tensor([0.25, 0.75]).view(1, 1, 1, 2)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = 0.5 ln(4/3)
    assert close(attention_kl(student, teacher, torch.ones(1, 1)), expected)


def test_attention_kl_averages_heads_and_ignores_masked_queries():
    # heads: head 0 differs as above, head 1 equal; query 1 is padding with garbage rows.
    teacher = torch.tensor([[[0.5, 0.5], [0.9, 0.1]], [[0.5, 0.5], [0.2, 0.8]]]).unsqueeze(0)
    student = torch.tensor([[[0.25, 0.75], [0.01, 0.99]], [[0.5, 0.5], [0.7, 0.3]]]).unsqueeze(0)
    mask = torch.tensor([[1.0, 0.0]])
    expected = (0.5 * math.log(4 / 3) + 0.0) / 2
    assert close(attention_kl(student, teacher, mask), expected)


def test_attention_kl_zero_probability_keys_are_finite():
    # The last key is masked out: probability exactly 0 for teacher and student.
    teacher = torch.tensor([0.5, 0.5, 0.0]).view(1, 1, 1, 3)
    student = torch.tensor([0.25, 0.75, 0.0]).view(1, 1, 1, 3).requires_grad_(True)
    loss = attention_kl(student, teacher, torch.ones(1, 1))
    assert close(loss, 0.5 * math.log(4 / 3))
    loss.backward()
    assert torch.isfinite(student.grad).all()


def test_regroup_heads_averages_adjacent_heads():
    probs = torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [1.0, 0.0]]).view(1, 4, 1, 2)
    grouped = regroup_heads(probs, 2)
    expected = torch.tensor([[0.2, 0.8], [0.75, 0.25]]).view(1, 2, 1, 2)
    assert grouped.shape == (1, 2, 1, 2)
    assert torch.allclose(grouped, expected)
    assert torch.allclose(regroup_heads(probs, 1), probs.mean(1, keepdim=True))


# --------------------------------------------------------------------------------------------
# Hard labels
# --------------------------------------------------------------------------------------------


def test_hard_label_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])  # softmax = [1/4, 3/4]
    loss = hard_label_loss(logits, torch.tensor([1, 0]))
    assert close(loss, (math.log(4 / 3) + math.log(4)) / 2)


def test_hard_label_ignores_minus_100():
    logits = torch.tensor([[0.0, LN3], [5.0, -5.0]])
    assert close(hard_label_loss(logits, torch.tensor([1, -100])), math.log(4 / 3))


def test_hard_label_mse_for_single_output_head():
    logits = torch.tensor([[1.0], [3.0]])
    assert close(hard_label_loss(logits, torch.tensor([0.0, 1.0])), (1 + 4) / 2)


# --------------------------------------------------------------------------------------------
# Knowledge terms
# --------------------------------------------------------------------------------------------


def test_logits_knowledge_uses_kl_with_temperature():
    term = LogitsKnowledge(LogitsConfig(temperature=2.0), shape(), shape())
    s, t = Features(logits=torch.tensor([[0.0, 0.0]])), Features(logits=torch.tensor([[0.0, LN3]]))
    p1 = 1 / (1 + math.sqrt(3))
    expected = 4 * (p1 * math.log(2 * p1) + (1 - p1) * math.log(2 * (1 - p1)))
    assert close(term(s, t, None), expected)


def test_logits_knowledge_uses_mse_for_one_label_heads():
    term = LogitsKnowledge(LogitsConfig(loss="kl"), shape(labels=1), shape(labels=1))
    s, t = Features(logits=torch.tensor([[1.0], [2.0]])), Features(logits=torch.zeros(2, 1))
    assert close(term(s, t, None), (1 + 4) / 2)  # a KL over one class would be 0


def test_logits_knowledge_rejects_shape_mismatch():
    term = LogitsKnowledge(LogitsConfig(), shape(), shape())
    with pytest.raises(ValueError, match="logits"):
        term(Features(logits=torch.zeros(2, 2)), Features(logits=torch.zeros(2, 3)), None)


def test_logits_knowledge_per_token_ignores_padding():
    term = LogitsKnowledge(LogitsConfig(loss="mse"), shape(), shape())
    student = torch.tensor([[[1.0, 1.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 0]])
    assert close(term(Features(student), Features(torch.zeros(1, 2, 2)), mask), 1.0)


def hidden_features(layers: int, width: int, seed: int = 0) -> Features:
    g = torch.Generator().manual_seed(seed)
    states = tuple(torch.randn(2, 3, width, generator=g) for _ in range(layers + 1))
    return Features(logits=torch.zeros(2, 2), hidden_states=states)


def count_linears(term: HiddenKnowledge) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in term.modules())


def test_hidden_knowledge_projects_only_when_widths_differ():
    same = HiddenKnowledge(HiddenConfig(), shape(4, 32), shape(2, 32))
    assert count_linears(same) == 0 and list(same.parameters()) == []
    wide = HiddenKnowledge(HiddenConfig(), shape(4, 32), shape(2, 16))
    assert count_linears(wide) == 2  # one per matched layer pair
    assert wide.projections[0].weight.shape == (32, 16)


def test_hidden_knowledge_shared_projection():
    term = HiddenKnowledge(HiddenConfig(projection="shared"), shape(4, 32), shape(2, 16))
    assert count_linears(term) == 1


def test_hidden_knowledge_projection_none_needs_equal_widths():
    with pytest.raises(ConfigError, match="16"):
        HiddenKnowledge(HiddenConfig(projection="none"), shape(4, 32), shape(2, 16))


def test_hidden_knowledge_equal_widths_matches_uniform_layers_by_hand():
    term = HiddenKnowledge(HiddenConfig(), shape(4, 8), shape(2, 8))
    student, teacher = hidden_features(2, 8, seed=1), hidden_features(4, 8, seed=2)
    hs, ht = student.hidden_states, teacher.hidden_states
    expected = (((hs[1] - ht[2]) ** 2).mean() + ((hs[2] - ht[4]) ** 2).mean()) / 2
    assert torch.allclose(term(student, teacher, None), expected)


def test_hidden_knowledge_gradients_reach_projections():
    term = HiddenKnowledge(HiddenConfig(include_embeddings=True), shape(4, 32), shape(2, 16))
    assert count_linears(term) == 3  # embeddings + 2 layers
    loss = term(hidden_features(2, 16), hidden_features(4, 32, seed=1), torch.ones(2, 3))
    loss.backward()
    for projection in term.projections:
        assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0


def attention_features(layers: int, heads: int, seed: int = 0) -> Features:
    g = torch.Generator().manual_seed(seed)
    maps = tuple(torch.softmax(torch.randn(2, heads, 3, 3, generator=g), -1) for _ in range(layers))
    return Features(logits=torch.zeros(2, 2), attentions=maps)


def test_attention_knowledge_rejects_heads_that_do_not_divide():
    with pytest.raises(ConfigError, match="12 heads"):
        AttentionKnowledge(AttentionConfig(), shape(4, 60, heads=12), shape(2, 60, heads=5))


def test_attention_knowledge_regroups_12_teacher_heads_onto_4():
    term = AttentionKnowledge(AttentionConfig(), shape(2, 48, heads=12), shape(1, 48, heads=4))
    student, teacher = attention_features(1, 4), attention_features(2, 12, seed=1)
    mask = torch.ones(2, 3)
    regrouped = teacher.attentions[1].reshape(2, 4, 3, 3, 3).mean(2)  # teacher layer 2 <-> 1
    expected = attention_kl(student.attentions[0], regrouped, mask)
    assert torch.allclose(term(student, teacher, mask), expected)


def test_attention_knowledge_average_heads_allows_any_head_counts():
    term = AttentionKnowledge(
        AttentionConfig(heads="average"), shape(2, 60, heads=12), shape(1, 60, heads=5)
    )
    student, teacher = attention_features(1, 5), attention_features(2, 12, seed=1)
    expected = attention_kl(
        student.attentions[0].mean(1, keepdim=True),
        teacher.attentions[1].mean(1, keepdim=True),
        torch.ones(2, 3),
    )
    assert torch.allclose(term(student, teacher, None), expected)


# --------------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------------


def test_term_names_suffix_repeated_types():
    configs = [LogitsConfig(), HiddenConfig(), HiddenConfig(loss="cosine"), AttentionConfig()]
    assert term_names(configs) == ["logits", "hidden_1", "hidden_2", "attention"]


def test_objective_total_is_weighted_sum(make_config):
    knowledge = [
        LogitsConfig(weight=0.3, temperature=1.0),
        HiddenConfig(weight=2.0),
        HiddenConfig(weight=0.5, loss="cosine"),
    ]
    teacher_cfg, student_cfg = make_config(layers=4), make_config(layers=2)
    objective = DistillationObjective(knowledge, teacher_cfg, student_cfg, hard_label_weight=0.7)
    assert objective.needs.hidden_states and not objective.needs.attentions

    student = hidden_features(2, 32, seed=1)
    teacher = hidden_features(4, 32, seed=2)
    student.logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    teacher.logits = torch.tensor([[0.0, LN3], [0.0, LN3]])
    labels = torch.tensor([1, 0])
    out = objective(student, teacher, labels, torch.ones(2, 3))

    assert set(out.terms) == {"logits", "hidden_1", "hidden_2", "hard_label"}
    assert close(out.terms["logits"], 0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert close(out.terms["hard_label"], math.log(2))
    expected = (
        0.3 * out.terms["logits"]
        + 2.0 * out.terms["hidden_1"]
        + 0.5 * out.terms["hidden_2"]
        + 0.7 * out.terms["hard_label"]
    )
    assert torch.allclose(out.loss, expected)
    assert all(not v.requires_grad for v in out.terms.values())


def test_objective_without_labels_has_no_hard_term(make_config):
    objective = DistillationObjective([LogitsConfig()], make_config(), make_config(), 0.5)
    logits = Features(logits=torch.tensor([[0.0, 1.0]]))
    out = objective(logits, logits, None)
    assert set(out.terms) == {"logits"} and close(out.loss, 0.0)


def test_objective_needs_attention_and_owns_projections(make_config):
    objective = DistillationObjective(
        [AttentionConfig(), HiddenConfig()],
        make_config(layers=4, hidden=32),
        make_config(layers=2, hidden=16, heads=2),
    )
    assert objective.needs.attentions and objective.needs.hidden_states
    names = {name for name, _ in objective.named_parameters()}
    assert "terms.hidden.projections.0.weight" in names
