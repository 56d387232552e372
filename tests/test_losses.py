"""Loss functions against hand computations, and the knowledge terms / objective built on them."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import naive_group_heads

from kdformer.config.base import ConfigError
from kdformer.config.knowledge import AttentionConfig, HiddenConfig, LogitsConfig
from kdformer.features import Features, OutputSpec
from kdformer.knowledge import ModelShape
from kdformer.knowledge.attention import AttentionKnowledge, attention_kl, regroup_heads
from kdformer.knowledge.hidden import HiddenKnowledge, masked_cosine, masked_mse
from kdformer.knowledge.logits import (
    LogitsKnowledge,
    hard_label_loss,
    kl_with_temperature,
    logits_mse,
)
from kdformer.objective import DistillationObjective, term_names

LN3 = math.log(3)
PER_EXAMPLE = OutputSpec("logits", label_key="labels")
OUTPUTS = (PER_EXAMPLE,)


def logits(values: torch.Tensor, **extra) -> Features:
    """Features holding only ``logits`` (and whatever ``extra`` sets)."""
    return Features(outputs={"logits": values}, **extra)


def hard(values: torch.Tensor, labels: torch.Tensor, spec: OutputSpec = PER_EXAMPLE):
    return hard_label_loss(spec, values, labels, {spec.label_key: labels})


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
    loss = hard(logits, torch.tensor([1, 0]))
    assert close(loss, (math.log(4 / 3) + math.log(4)) / 2)


def test_hard_label_ignores_minus_100():
    logits = torch.tensor([[0.0, LN3], [5.0, -5.0]])
    assert close(hard(logits, torch.tensor([1, -100])), math.log(4 / 3))
    # A batch without any gold label (augmented examples only) adds nothing, not NaN.
    assert close(hard(logits, torch.tensor([-100, -100])), 0.0)


def test_hard_label_mse_for_single_output_head():
    logits = torch.tensor([[1.0], [3.0]])
    assert close(hard(logits, torch.tensor([0.0, 1.0])), (1 + 4) / 2)
    # NaN marks an example without a gold value (an augmented one): it is left out.
    assert close(hard(logits, torch.tensor([0.0, float("nan")])), 1.0)


def test_hard_label_over_positions_excludes_padding():
    # QA start logits over 3 positions, the last one padding: softmax over the first two only.
    spec = OutputSpec("start_logits", label_key="start_positions", over="positions")
    values = torch.tensor([[0.0, LN3, 100.0]])
    batch = {"start_positions": torch.tensor([1]), "attention_mask": torch.tensor([[1, 1, 0]])}
    loss = hard_label_loss(spec, values, batch["start_positions"], batch)
    assert close(loss, math.log(4 / 3))


# --------------------------------------------------------------------------------------------
# Knowledge terms
# --------------------------------------------------------------------------------------------


def test_logits_knowledge_uses_kl_with_temperature():
    term = LogitsKnowledge(LogitsConfig(temperature=2.0), shape(), shape(), OUTPUTS)
    s, t = logits(torch.tensor([[0.0, 0.0]])), logits(torch.tensor([[0.0, LN3]]))
    p1 = 1 / (1 + math.sqrt(3))
    expected = 4 * (p1 * math.log(2 * p1) + (1 - p1) * math.log(2 * (1 - p1)))
    assert close(term(s, t, {}), expected)


def test_logits_knowledge_uses_mse_for_one_label_heads():
    term = LogitsKnowledge(LogitsConfig(loss="kl"), shape(labels=1), shape(labels=1), OUTPUTS)
    s, t = logits(torch.tensor([[1.0], [2.0]])), logits(torch.zeros(2, 1))
    assert close(term(s, t, {}), (1 + 4) / 2)  # a KL over one class would be 0


def test_logits_knowledge_rejects_shape_mismatch():
    term = LogitsKnowledge(LogitsConfig(), shape(), shape(), OUTPUTS)
    with pytest.raises(ValueError, match="logits"):
        term(logits(torch.zeros(2, 2)), logits(torch.zeros(2, 3)), {})


def test_logits_knowledge_needs_outputs():
    with pytest.raises(ConfigError, match="no MLM head"):
        LogitsKnowledge(LogitsConfig(), shape(), shape(), ())


def test_logits_knowledge_per_token_ignores_padding():
    spec = OutputSpec("logits", label_key="labels", rows="token")
    term = LogitsKnowledge(LogitsConfig(loss="mse"), shape(), shape(), (spec,))
    student = torch.tensor([[[1.0, 1.0], [9.0, 9.0]]])
    batch = {"attention_mask": torch.tensor([[1, 0]])}
    assert close(term(logits(student), logits(torch.zeros(1, 2, 2)), batch), 1.0)


def test_logits_knowledge_labelled_tokens_only():
    # NER: only tokens with a gold label (a word's first piece) are distilled.
    spec = OutputSpec("logits", label_key="labels", rows="labelled")
    term = LogitsKnowledge(LogitsConfig(temperature=1.0), shape(), shape(), (spec,))
    student = torch.tensor([[[0.0, 0.0], [7.0, -7.0], [0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, LN3], [0.0, 0.0], [0.0, LN3]]])
    batch = {"attention_mask": torch.ones(1, 3), "labels": torch.tensor([[1, -100, 0]])}
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # KL of rows 0 and 2, averaged
    assert close(term(logits(student), logits(teacher), batch), expected)


def test_logits_knowledge_over_positions_start_and_end():
    # QA: KL between distributions over positions, padding excluded; start and end averaged.
    specs = (
        OutputSpec("start_logits", label_key="start_positions", over="positions"),
        OutputSpec("end_logits", label_key="end_positions", over="positions"),
    )
    term = LogitsKnowledge(LogitsConfig(temperature=1.0), shape(), shape(), specs)
    mask = {"attention_mask": torch.tensor([[1, 1, 0]])}
    student = Features(
        outputs={
            "start_logits": torch.tensor([[0.0, 0.0, 9.0]]),
            "end_logits": torch.tensor([[0.0, LN3, -9.0]]),
        }
    )
    teacher = Features(
        outputs={
            "start_logits": torch.tensor([[0.0, LN3, -3.0]]),
            "end_logits": torch.tensor([[0.0, LN3, 5.0]]),
        }
    )
    start = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert close(term(student, teacher, mask), (start + 0.0) / 2)


def hidden_features(layers: int, width: int, seed: int = 0) -> Features:
    g = torch.Generator().manual_seed(seed)
    states = tuple(torch.randn(2, 3, width, generator=g) for _ in range(layers + 1))
    return logits(torch.zeros(2, 2), hidden_states=states)


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
    assert torch.allclose(term(student, teacher, {}), expected)


def test_hidden_knowledge_gradients_reach_projections():
    term = HiddenKnowledge(HiddenConfig(include_embeddings=True), shape(4, 32), shape(2, 16))
    assert count_linears(term) == 3  # embeddings + 2 layers
    batch = {"attention_mask": torch.ones(2, 3)}
    loss = term(hidden_features(2, 16), hidden_features(4, 32, seed=1), batch)
    loss.backward()
    for projection in term.projections:
        assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0


def attention_features(layers: int, width: int, seed: int = 0) -> Features:
    """Captured query/key projections of every layer (batch 2, 3 tokens)."""
    g = torch.Generator().manual_seed(seed)
    modules = {
        (kind, layer): torch.randn(2, 3, width, generator=g)
        for layer in range(1, layers + 1)
        for kind in ("query", "key")
    }
    return logits(torch.zeros(2, 2), layer_modules=modules)


def naive_attention(
    features: Features, layer: int, heads: int, mask: list[list[int]]
) -> list[list[list[list[float]]]]:
    """probs[b][h][i][j] written out with loops over examples, heads and positions: for head h,
    score(i, j) = sum_c q[i][h*d + c] * k[j][h*d + c] / sqrt(d) with d = width / heads, and a
    softmax (math.exp) over the example's real keys j; padded keys get 0."""
    q = features.layer_modules[("query", layer)].tolist()
    k = features.layer_modules[("key", layer)].tolist()
    d = len(q[0][0]) // heads
    probs = []
    for b, row_mask in enumerate(mask):
        real = [j for j, m in enumerate(row_mask) if m]
        per_head = []
        for h in range(heads):
            rows = []
            for i in range(len(row_mask)):
                scores = {
                    j: sum(q[b][i][h * d + c] * k[b][j][h * d + c] for c in range(d)) / math.sqrt(d)
                    for j in real
                }
                total = sum(math.exp(v) for v in scores.values())
                rows.append(
                    [math.exp(scores[j]) / total if j in scores else 0.0 for j in range(len(q[b]))]
                )
            per_head.append(rows)
        probs.append(per_head)
    return probs


def naive_mean_kl(student, teacher, mask: list[list[int]]) -> float:
    """KL(teacher || student) of every (example, head, real query) row, averaged."""
    total, rows = 0.0, 0
    for b, row_mask in enumerate(mask):
        for h in range(len(student[b])):
            for i, real in enumerate(row_mask):
                if real:
                    t, s = teacher[b][h][i], student[b][h][i]
                    total += sum(p * math.log(p / q) for p, q in zip(t, s, strict=True) if p > 0)
                    rows += 1
    return total / rows


def test_attention_knowledge_rejects_heads_that_do_not_divide():
    with pytest.raises(ConfigError, match="12 heads"):
        AttentionKnowledge(AttentionConfig(), shape(4, 60, heads=12), shape(2, 60, heads=5))


def test_attention_knowledge_regroups_12_teacher_heads_onto_4():
    term = AttentionKnowledge(AttentionConfig(), shape(2, 48, heads=12), shape(1, 48, heads=4))
    student, teacher = attention_features(1, 48), attention_features(2, 48, seed=1)
    mask = [[1, 1, 1], [1, 1, 0]]  # the second example's last token is padding
    # teacher layer 2 <-> student layer 1; teacher heads 0-2 -> student head 0, 3-5 -> 1, ...
    teacher_probs = naive_group_heads(naive_attention(teacher, 2, 12, mask), 4)
    expected = naive_mean_kl(naive_attention(student, 1, 4, mask), teacher_probs, mask)
    loss = term(student, teacher, {"attention_mask": torch.tensor(mask)})
    assert close(loss, expected, tol=1e-5)
    assert expected > 0.01  # the random projections give maps far apart


def test_attention_knowledge_average_heads_allows_any_head_counts():
    term = AttentionKnowledge(
        AttentionConfig(heads="average"), shape(2, 60, heads=12), shape(1, 60, heads=5)
    )
    student, teacher = attention_features(1, 60), attention_features(2, 60, seed=1)
    mask = [[1, 1, 0], [1, 1, 1]]
    # Both sides compare the mean of all their heads' distributions.
    expected = naive_mean_kl(
        naive_group_heads(naive_attention(student, 1, 5, mask), 1),
        naive_group_heads(naive_attention(teacher, 2, 12, mask), 1),
        mask,
    )
    loss = term(student, teacher, {"attention_mask": torch.tensor(mask)})
    assert close(loss, expected, tol=1e-5)
    assert expected > 0.001


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
    objective = DistillationObjective(
        knowledge, teacher_cfg, student_cfg, OUTPUTS, hard_label_weight=0.7
    )
    assert objective.needs.hidden_states and not objective.needs.layer_modules

    student = hidden_features(2, 32, seed=1)
    teacher = hidden_features(4, 32, seed=2)
    student.outputs["logits"] = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    teacher.outputs["logits"] = torch.tensor([[0.0, LN3], [0.0, LN3]])
    batch = {"labels": torch.tensor([1, 0]), "attention_mask": torch.ones(2, 3)}
    out = objective(student, teacher, batch)

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
    objective = DistillationObjective([LogitsConfig()], make_config(), make_config(), OUTPUTS, 0.5)
    same = logits(torch.tensor([[0.0, 1.0]]))
    out = objective(same, same, {})
    assert set(out.terms) == {"logits"} and close(out.loss, 0.0)


def test_empty_objective_is_refused(make_config):
    with pytest.raises(ConfigError, match="empty"):
        DistillationObjective([], make_config(), make_config(), OUTPUTS, hard_label_weight=0.0)


def test_objective_needs_attention_and_owns_projections(make_config):
    objective = DistillationObjective(
        [AttentionConfig(), HiddenConfig()],
        make_config(layers=4, hidden=32),
        make_config(layers=2, hidden=16, heads=2),
        OUTPUTS,
    )
    assert ("query", 2) in objective.needs_for("student").layer_modules
    assert ("key", 4) in objective.needs_for("teacher").layer_modules
    assert objective.needs.hidden_states
    names = {name for name, _ in objective.named_parameters()}
    assert "terms.hidden.projections.0.weight" in names


def test_kl_over_positions_below_temperature_one_is_finite():
    """Padding is masked after scaling by 1/T, so T < 1 cannot overflow it to -inf."""
    spec = OutputSpec("start_logits", label_key="start_positions", over="positions")
    term = LogitsKnowledge(LogitsConfig(temperature=0.5), shape(), shape(), (spec,))
    mask = {"attention_mask": torch.tensor([[1, 1, 0]])}
    student = Features(
        outputs={"start_logits": torch.tensor([[0.0, 0.0, 3.0]], requires_grad=True)}
    )
    teacher = Features(outputs={"start_logits": torch.tensor([[0.0, LN3 / 2, -3.0]])})
    loss = term(student, teacher, mask)
    # At T = 0.5 the teacher's real positions have logits [0, ln 3]: p = [1/4, 3/4].
    expected = 0.25 * (0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert close(loss, expected)
    loss.backward()
    assert torch.isfinite(student.outputs["start_logits"].grad).all()
    assert student.outputs["start_logits"].grad[0, 2] == 0, "padding gets no gradient"
