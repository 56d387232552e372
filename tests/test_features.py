"""Feature extraction from unmodified HF models, the frozen teacher, and the training module."""

from __future__ import annotations

import pytest
import torch

from kdformer.config.knowledge import HiddenConfig, LogitsConfig
from kdformer.features import FeatureNeeds, capture_modules, extract_features, prepare_model
from kdformer.objective import DistillationObjective
from kdformer.tasks.classification import ClassificationTask
from kdformer.teacher import LiveTeacher
from kdformer.training import DistillationModel

LAYER0 = "bert.encoder.layer.0"
LOGITS = FeatureNeeds(outputs=frozenset({"logits"}))


def hooks_of(model: torch.nn.Module, name: str = LAYER0) -> set[int]:
    """Forward-hook ids on a submodule (transformers adds its own on the first forward pass)."""
    return set(model.get_submodule(name)._forward_hooks)


def warm_up(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """One forward pass asking for hidden states, so transformers' lazy hooks exist already."""
    model(**batch, output_hidden_states=True)


def test_only_the_outputs_asked_for(teacher_model, batch):
    features = extract_features(teacher_model, batch, LOGITS)
    assert features.logits.shape == (2, 2) and set(features.outputs) == {"logits"}
    assert features.hidden_states is None and features.modules == {}
    assert extract_features(teacher_model, batch, FeatureNeeds()).outputs == {}


def test_an_output_the_model_lacks_names_the_model_class(teacher_model, batch):
    with pytest.raises(ValueError, match=r"start_logits.*model class"):
        extract_features(teacher_model, batch, FeatureNeeds(outputs=frozenset({"start_logits"})))


def test_hidden_states_are_layers_plus_one(teacher_model, batch):
    features = extract_features(teacher_model, batch, FeatureNeeds(hidden_states=True))
    assert len(features.hidden_states) == 4 + 1
    assert all(h.shape == (2, 6, 32) for h in features.hidden_states)


def test_ignores_inputs_the_model_does_not_take(teacher_model, batch):
    with_extra = {**batch, "idx": torch.tensor([0, 1]), "text": torch.zeros(2)}
    plain = extract_features(teacher_model, batch, LOGITS)
    assert torch.equal(extract_features(teacher_model, with_extra, LOGITS).logits, plain.logits)


def test_prepare_model_keeps_fused_attention(teacher_model):
    """No knowledge type needs the model's attention maps, so the fused kernel stays on."""
    needs = FeatureNeeds(hidden_states=True, layer_modules=frozenset({("query", 1), ("key", 1)}))
    prepare_model(teacher_model, needs)
    assert teacher_model.config._attn_implementation == "sdpa"


def test_capture_modules_records_output_and_removes_hooks(teacher_model, batch):
    warm_up(teacher_model, batch)
    before = hooks_of(teacher_model)
    with capture_modules(teacher_model, frozenset({LAYER0})) as captured:
        assert len(hooks_of(teacher_model) - before) == 1
        out = teacher_model(**batch, output_hidden_states=True)
    assert hooks_of(teacher_model) == before
    assert torch.equal(captured[LAYER0], out.hidden_states[1])


def test_capture_modules_removes_hooks_after_an_error(teacher_model):
    before = hooks_of(teacher_model)
    with pytest.raises(ZeroDivisionError), capture_modules(teacher_model, frozenset({LAYER0})):
        1 / 0  # noqa: B018
    assert hooks_of(teacher_model) == before


def test_extract_features_captures_named_modules(teacher_model, batch):
    warm_up(teacher_model, batch)
    before = hooks_of(teacher_model)
    needs = FeatureNeeds(hidden_states=True, modules=frozenset({LAYER0, "bert.pooler"}))
    features = extract_features(teacher_model, batch, needs)
    assert torch.equal(features.modules[LAYER0], features.hidden_states[1])
    assert features.modules["bert.pooler"].shape == (2, 32)
    assert hooks_of(teacher_model) == before


def test_unknown_module_name_raises_key_error(teacher_model, batch):
    with pytest.raises(KeyError, match="bert.encoder.layer.99"):
        extract_features(
            teacher_model, batch, FeatureNeeds(modules=frozenset({"bert.encoder.layer.99"}))
        )


def test_feature_needs_union():
    a = FeatureNeeds(hidden_states=True, hidden_layers=frozenset({2}), modules=frozenset({"x"}))
    b = FeatureNeeds(
        outputs=frozenset({"logits"}), hidden_layers=frozenset({0}), modules=frozenset({"y"})
    )
    assert a | b == FeatureNeeds(
        outputs=frozenset({"logits"}),
        hidden_states=True,
        hidden_layers=frozenset({0, 2}),
        modules=frozenset({"x", "y"}),
    )


# --------------------------------------------------------------------------------------------
# Teacher and training module
# --------------------------------------------------------------------------------------------


def test_live_teacher_is_frozen_and_gives_no_grad_features(teacher_model, batch):
    teacher_model.train()
    needs = FeatureNeeds(outputs=frozenset({"logits"}), hidden_states=True)
    teacher = LiveTeacher(teacher_model, needs)
    assert not teacher_model.training
    assert all(not p.requires_grad for p in teacher_model.parameters())
    features = teacher(batch)
    assert not features.logits.requires_grad
    assert all(not h.requires_grad for h in features.hidden_states)


def test_live_teacher_is_deterministic(teacher_model, batch):
    teacher = LiveTeacher(teacher_model, LOGITS)
    teacher_model.train()  # e.g. a caller flipped it back: dropout must still be off
    assert torch.equal(teacher(batch).logits, teacher(batch).logits)


def distillation_model(make_bert) -> tuple[DistillationModel, torch.nn.Module, torch.nn.Module]:
    teacher = make_bert(seed=0, layers=4, hidden=32)
    student = make_bert(seed=1, layers=2, hidden=16, heads=2, intermediate=32).train()
    objective = DistillationObjective(
        [LogitsConfig(), HiddenConfig()],
        teacher.config,
        student.config,
        ClassificationTask.outputs,
        hard_label_weight=0.5,
    )
    live = LiveTeacher(teacher, objective.needs)
    return DistillationModel(student, objective, live), student, teacher


def test_distillation_model_keeps_teacher_out_of_state_and_parameters(make_bert):
    model, student, teacher = distillation_model(make_bert)
    keys = set(model.state_dict())
    assert {f"student.{k}" for k in student.state_dict()} <= keys
    assert "objective.terms.hidden.projections.0.weight" in keys
    assert all(k.startswith(("student.", "objective.")) for k in keys)

    params = {id(p) for p in model.parameters()}
    assert not params & {id(p) for p in teacher.parameters()}
    assert {id(p) for p in student.parameters()} <= params
    assert {id(p) for p in model.objective.parameters()} <= params
    assert len(params) == len(list(student.parameters())) + 2 * 2  # 2 projections, weight + bias


def test_distillation_model_forward_trains_student_and_projections(make_bert, batch):
    model, student, teacher = distillation_model(make_bert)
    out = model(**batch)
    assert out["logits"].shape == (2, 2)
    assert set(model.last_terms) == {"logits", "hidden", "hard_label"}
    out["loss"].backward()
    assert student.classifier.weight.grad is not None
    assert model.objective.terms["hidden"].projections[0].weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_keep_freed_memory_on_linux_and_its_opt_out(monkeypatch):
    import sys

    from kdformer.training import keep_freed_memory

    monkeypatch.setenv("KDFORMER_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("KDFORMER_KEEP_FREED_MEMORY")
    assert keep_freed_memory() is sys.platform.startswith("linux")
