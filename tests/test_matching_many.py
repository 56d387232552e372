"""last_only and many-to-one layer matching: tables, the learned teacher-layer mixer, and every
layer-based knowledge type using it."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from kdformer.config.base import ConfigError
from kdformer.config.knowledge import (
    AttentionConfig,
    HiddenConfig,
    IntermediateConfig,
    QKVRelationsConfig,
    ValueRelationConfig,
)
from kdformer.knowledge.layers import CENTRE_PRIOR, TeacherLayerMixer
from kdformer.matching import LayerGroup, layer_groups, layer_pairs
from kdformer.objective import DistillationObjective
from kdformer.tasks.classification import ClassificationTask
from kdformer.teacher import LiveTeacher
from kdformer.training import DistillationModel

LAST_ONLY = {(12, 6): [(6, 12)], (12, 4): [(4, 12)], (6, 3): [(3, 6)], (6, 2): [(2, 6)]}

# (teacher, student, window) -> [(student, teacher window)], 1-based, centred on m * k.
MANY_TO_ONE = {
    (12, 4, 3): [(1, (2, 3, 4)), (2, (5, 6, 7)), (3, (8, 9, 10)), (4, (11, 12))],
    (6, 3, 3): [(1, (1, 2, 3)), (2, (3, 4, 5)), (3, (5, 6))],
    (12, 6, 5): [
        (1, (1, 2, 3, 4)),
        (2, (2, 3, 4, 5, 6)),
        (3, (4, 5, 6, 7, 8)),
        (4, (6, 7, 8, 9, 10)),
        (5, (8, 9, 10, 11, 12)),
        (6, (10, 11, 12)),
    ],
    (4, 2, 9): [(1, (1, 2, 3, 4)), (2, (1, 2, 3, 4))],
}


@pytest.mark.parametrize("teacher, student", list(LAST_ONLY))
def test_last_only_table(teacher, student):
    assert layer_pairs("last_only", teacher, student) == LAST_ONLY[(teacher, student)]
    assert layer_groups("last_only", teacher, student) == [LayerGroup(student, (teacher,), teacher)]


@pytest.mark.parametrize("teacher, student, window", list(MANY_TO_ONE))
def test_many_to_one_windows_are_centred_and_clipped(teacher, student, window):
    groups = layer_groups("many_to_one", teacher, student, window)
    assert [(g.student, g.teachers) for g in groups] == MANY_TO_ONE[(teacher, student, window)]
    assert [g.centre for g in groups] == [t for _, t in layer_pairs("uniform", teacher, student)]


@pytest.mark.parametrize("teacher, student", [(12, 6), (12, 4), (6, 3), (6, 2)])
def test_window_of_one_is_uniform(teacher, student):
    groups = layer_groups("many_to_one", teacher, student, 1)
    assert [(g.student, g.teachers[0]) for g in groups] == layer_pairs("uniform", teacher, student)


@pytest.mark.parametrize("window", [0, 2, 4])
def test_window_must_be_odd_and_positive(window):
    with pytest.raises(ConfigError, match="odd window"):
        layer_groups("many_to_one", 12, 4, window)
    with pytest.raises(ValidationError):
        HiddenConfig(layers="many_to_one", window=window)


def test_many_to_one_has_no_pairs_and_unknown_strategies_list_all():
    with pytest.raises(ConfigError, match="layer_groups"):
        layer_pairs("many_to_one", 12, 4)
    with pytest.raises(ConfigError, match="uniform, first, last, last_only, many_to_one"):
        layer_groups("middle", 12, 4)
    with pytest.raises(ValidationError):
        HiddenConfig(layers="middle")


def test_explicit_pairs_still_checked_through_groups():
    assert layer_groups([[1, 4]], 12, 2) == [LayerGroup(1, (4,), 4)]
    with pytest.raises(ConfigError, match="teacher has 12 layers"):
        layer_groups([[1, 13]], 12, 2)


# --------------------------------------------------------------------------------------------
# The mixer
# --------------------------------------------------------------------------------------------


def test_mixer_starts_favouring_the_centre_and_mixes_to_a_distribution():
    mixer = TeacherLayerMixer(layer_groups("many_to_one", 12, 4, 3))
    assert mixer.logits.shape == (4, 3)
    centre = math.exp(CENTRE_PRIOR) / (math.exp(CENTRE_PRIOR) + 2)
    assert torch.allclose(
        mixer.weights(0), torch.tensor([(1 - centre) / 2, centre, (1 - centre) / 2])
    )
    edge = math.exp(CENTRE_PRIOR) / (math.exp(CENTRE_PRIOR) + 1)
    assert torch.allclose(mixer.weights(3), torch.tensor([1 - edge, edge]))  # (11, 12), centre 12
    maps = [torch.softmax(torch.randn(2, 2, 3, 3), -1) for _ in range(3)]
    mixed = mixer.mix(0, maps)
    side = (1 - centre) / 2
    assert torch.allclose(mixed, side * maps[0] + centre * maps[1] + side * maps[2])
    assert torch.allclose(mixed.sum(-1), torch.ones(2, 2, 3))


def test_one_to_one_mixer_has_no_parameters():
    assert list(TeacherLayerMixer(layer_groups("uniform", 12, 4)).parameters()) == []
    assert list(TeacherLayerMixer(layer_groups("many_to_one", 12, 4, 1)).parameters()) == []


# --------------------------------------------------------------------------------------------
# Every layer-based term with many_to_one, on real tiny models
# --------------------------------------------------------------------------------------------

LAYER_TERMS = {
    "hidden": lambda **kw: HiddenConfig(**kw),
    "hidden_pkd": lambda **kw: HiddenConfig(loss="pkd", **kw),
    "attention_kl": lambda **kw: AttentionConfig(**kw),
    "attention_mse": lambda **kw: AttentionConfig(loss="mse", **kw),
    "value_relation": lambda **kw: ValueRelationConfig(**kw),
    "qkv_relations": lambda **kw: QKVRelationsConfig(**kw),
    "intermediate": lambda **kw: IntermediateConfig(**kw),
}


@pytest.fixture
def pair(make_bert):
    teacher = make_bert(seed=0, layers=4, hidden=32, heads=4, intermediate=64)
    student = make_bert(seed=1, layers=2, hidden=16, heads=2, intermediate=32)
    return teacher, student


def run(pair, batch, knowledge, seed=0):
    teacher, student = pair
    torch.manual_seed(seed)  # same projection initialisation for configs that build the same ones
    objective = DistillationObjective(
        [knowledge], teacher.config, student.config, ClassificationTask.outputs
    )
    model = DistillationModel(student, objective, LiveTeacher(teacher, objective.needs))
    return model, model(**{k: v for k, v in batch.items() if k != "labels"})["loss"]


@pytest.mark.parametrize("name", list(LAYER_TERMS))
def test_many_to_one_weights_get_gradients(pair, batch, name):
    model, loss = run(pair, batch, LAYER_TERMS[name](layers="many_to_one", window=3))
    (term,) = model.objective.terms.values()
    assert term.mixer.logits.shape == (2, 3)  # 2 student layers, windows (1, 2, 3), (3, 4)
    loss.backward()
    grad = term.mixer.logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[0].abs().sum() > 0 and grad[1, :2].abs().sum() > 0
    assert torch.all(grad[1, 2] == 0)  # the clipped slot of the edge window is unused


@pytest.mark.parametrize("name", list(LAYER_TERMS))
def test_window_of_one_equals_uniform(pair, batch, name):
    _, many = run(pair, batch, LAYER_TERMS[name](layers="many_to_one", window=1))
    _, uniform = run(pair, batch, LAYER_TERMS[name](layers="uniform"))
    assert float(uniform.detach()) > 0
    assert torch.allclose(many, uniform)


@pytest.mark.parametrize("name", ["value_relation", "qkv_relations"])
def test_relations_default_to_the_last_layer_only(pair, batch, name):
    model, last = run(pair, batch, LAYER_TERMS[name]())
    (term,) = model.objective.terms.values()
    assert [(g.student, g.teachers) for g in term.groups] == [(2, (4,))]
    _, explicit = run(pair, batch, LAYER_TERMS[name](layers=[(2, 4)]))
    assert torch.allclose(last, explicit)


def test_many_to_one_mixer_and_projections_live_in_the_objective_not_the_student(pair, batch):
    model, _ = run(pair, batch, IntermediateConfig(layers="many_to_one", projection="shared"))
    keys = set(model.state_dict())
    assert "objective.terms.intermediate.mixer.logits" in keys
    assert "objective.terms.intermediate.projections.0.weight" in keys
    assert "objective.terms.intermediate.projections.1.weight" not in keys  # shared
    assert not any("mixer" in k or "projections" in k for k in model.student.state_dict())
