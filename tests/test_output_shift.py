"""OutputSpec.shift: a causal LM's next-token targets. Position t's logits pair with label t+1
(``logits[:, :-1]`` with ``labels[:, 1:]``), in the hard-label loss, the per-token soft labels
and the teacher cache's stored positions; shift 0 keeps a token's own label."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdformer.cache import Item, cache_items
from kdformer.cache.items import row_positions
from kdformer.config.knowledge import LogitsConfig
from kdformer.features import FeatureNeeds, Features, OutputSpec
from kdformer.knowledge import ModelShape
from kdformer.knowledge.logits import LogitsKnowledge, hard_label_loss

LN3 = math.log(3)
OWN = OutputSpec("logits", label_key="labels", rows="labelled")
NEXT = OutputSpec("logits", label_key="labels", rows="labelled", shift=1)

# One sequence of 4 tokens over 2 classes. softmax([0, ln 3]) = [1/4, 3/4].
LOGITS = torch.tensor([[[0.0, LN3], [LN3, 0.0], [0.0, 0.0], [0.0, LN3]]])
LABELS = torch.tensor([[-100, 1, 1, 0]])


def shape() -> ModelShape:
    return ModelShape(num_layers=2, hidden_size=8, num_heads=2, intermediate_size=16, num_labels=2)


def close(actual: torch.Tensor, expected: float, tol: float = 1e-6) -> bool:
    return abs(float(actual.detach()) - expected) < tol


def test_hard_labels_pair_position_t_with_label_t_plus_shift_by_hand():
    batch = {"labels": LABELS, "attention_mask": torch.ones(1, 4)}
    # shift 0: positions 1, 2, 3 against labels 1, 1, 0 (position 0 is unlabelled).
    own = -(math.log(1 / 4) + math.log(1 / 2) + math.log(1 / 4)) / 3
    # shift 1: positions 0, 1, 2 against labels 1, 1, 0 (the next token's); position 3 has
    # no next token.
    following = -(math.log(3 / 4) + math.log(1 / 4) + math.log(1 / 2)) / 3
    assert close(hard_label_loss(OWN, LOGITS, LABELS, batch), own)
    assert close(hard_label_loss(NEXT, LOGITS, LABELS, batch), following)
    # transformers' causal-LM loss pairs them the same way.
    reference = F.cross_entropy(LOGITS[:, :-1].reshape(-1, 2), LABELS[:, 1:].reshape(-1))
    assert close(hard_label_loss(NEXT, LOGITS, LABELS, batch), float(reference))


def test_soft_labels_compare_the_rows_whose_target_is_real_by_hand():
    token, next_token = (
        OutputSpec("logits", rows="token"),
        OutputSpec("logits", rows="token", shift=1),
    )
    student = torch.zeros(1, 4, 2)  # [1/2, 1/2] everywhere
    teacher = torch.tensor([[[0.0, LN3], [LN3, 0.0], [9.0, -9.0], [-9.0, 9.0]]])
    batch = {"attention_mask": torch.tensor([[1, 1, 1, 0]])}  # the last token is padding
    kl_quarter = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # rows 0 and 1
    kl_sure = math.log(2.0)  # row 2, a near one-hot teacher
    term = LogitsKnowledge(LogitsConfig(temperature=1.0), shape(), shape(), (token,))
    # shift 0: rows 0, 1, 2 (the real tokens).
    value = term(
        Features(outputs={"logits": student}), Features(outputs={"logits": teacher}), batch
    )
    assert close(value, (2 * kl_quarter + kl_sure) / 3, 1e-5)
    # shift 1: rows 0 and 1 only (row 2's target, token 3, is padding).
    term = LogitsKnowledge(LogitsConfig(temperature=1.0), shape(), shape(), (next_token,))
    value = term(
        Features(outputs={"logits": student}), Features(outputs={"logits": teacher}), batch
    )
    assert close(value, kl_quarter, 1e-6)


def test_labelled_soft_labels_follow_the_shifted_labels():
    student = torch.zeros(1, 4, 2)
    teacher = torch.tensor([[[0.0, LN3], [-9.0, 9.0], [0.0, LN3], [9.0, -9.0]]])
    batch = {"attention_mask": torch.ones(1, 4), "labels": torch.tensor([[-100, 0, -100, 1]])}
    kl_quarter = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    term = LogitsKnowledge(LogitsConfig(temperature=1.0), shape(), shape(), (NEXT,))
    value = term(
        Features(outputs={"logits": student}), Features(outputs={"logits": teacher}), batch
    )
    assert close(value, kl_quarter, 1e-6)  # rows 0 and 2 (labels at 1 and 3), both [1/4, 3/4]


def test_cache_stores_the_positions_whose_target_is_labelled():
    needs = FeatureNeeds(outputs=frozenset({"logits"}))
    [own] = cache_items(needs, (OWN,), 2)
    [following] = cache_items(needs, (NEXT,), 2)
    assert (own.shift, following.shift) == (0, 1)
    assert own.folder("float16") != following.folder("float16")
    assert own.folder("float16") == Item("out.logits", "labelled", "labels").folder("float16")
    batch = {"labels": torch.tensor([[-100, 0, -100, 1]]), "input_ids": torch.zeros(1, 4)}
    assert row_positions(own, batch, 0).tolist() == [1, 3]
    assert row_positions(following, batch, 0).tolist() == [0, 2]


def test_shift_is_for_token_rows_only():
    with pytest.raises(ValueError, match="token rows"):
        OutputSpec("logits", label_key="labels", shift=1)  # per-example rows
    with pytest.raises(ValueError, match="token rows"):
        OutputSpec("start_logits", over="positions", shift=1)
    with pytest.raises(ValueError, match="0 or more"):
        OutputSpec("logits", rows="token", shift=-1)
