"""Student shapes, presets, and initialisation from the teacher's layers."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from kdformer.config import ConfigError, StudentConfig
from kdformer.students import build_student, copy_teacher_layers, student_config, student_shape

LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


def shape_tuple(shape: dict[str, int]) -> tuple[int, int, int, int]:
    return (
        shape["num_layers"],
        shape["hidden_size"],
        shape["num_heads"],
        shape["intermediate_size"],
    )


# --------------------------------------------------------------------------------------------
# Shapes and presets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("tiny", (2, 128, 2, 512)),
        ("mini", (4, 256, 4, 1024)),
        ("small", (4, 512, 8, 2048)),
        ("medium", (8, 512, 8, 2048)),
        ("base", (12, 768, 12, 3072)),
        ("half", (6, 48, 4, 96)),
        ("third", (4, 48, 4, 96)),
        ("quarter", (3, 48, 4, 96)),
    ],
)
def test_presets(make_config, preset, expected):
    teacher = make_config(layers=12, hidden=48, heads=4, intermediate=96)
    assert shape_tuple(student_shape(teacher, StudentConfig(preset=preset))) == expected


def test_no_preset_keeps_teacher_shape(bert_config):
    assert shape_tuple(student_shape(bert_config, StudentConfig())) == (4, 32, 4, 64)


def test_relative_preset_never_goes_below_one_layer(make_config):
    shape = student_shape(make_config(layers=2), StudentConfig(preset="quarter"))
    assert shape["num_layers"] == 1


def test_explicit_fields_override_preset(bert_config):
    cfg = StudentConfig(preset="mini", num_layers=3, intermediate_size=100)
    assert shape_tuple(student_shape(bert_config, cfg)) == (3, 256, 4, 100)


def test_unknown_preset_lists_valid(bert_config):
    with pytest.raises(ConfigError, match="tiny, mini, small, medium, base, half, third, quarter"):
        student_shape(bert_config, StudentConfig(preset="huge"))


def test_hidden_not_divisible_by_heads(bert_config):
    with pytest.raises(ConfigError, match="hidden_size 30 is not divisible by num_heads 4"):
        student_shape(bert_config, StudentConfig(hidden_size=30, init="random"))


def test_student_config_copies_teacher_config_with_new_shape(bert_config):
    config = student_config(bert_config, StudentConfig(preset="half"))
    assert config.num_hidden_layers == 2
    assert (config.hidden_size, config.vocab_size, config.num_labels) == (32, 100, 2)
    assert bert_config.num_hidden_layers == 4  # the teacher's config is untouched


def test_student_config_random_init_may_change_width(bert_config):
    config = student_config(bert_config, StudentConfig(preset="tiny", init="random"))
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 128, 2)
    assert config.intermediate_size == 512


def test_teacher_init_needs_teacher_width(bert_config):
    with pytest.raises(ConfigError, match="hidden_size 16 vs teacher 32"):
        student_config(bert_config, StudentConfig(hidden_size=16, num_heads=4))


def test_teacher_init_rejects_deeper_student(bert_config):
    with pytest.raises(ConfigError, match=r"no deeper than the teacher \(6 > 4"):
        student_config(bert_config, StudentConfig(num_layers=6))


def test_teacher_init_validates_explicit_layer_list(bert_config):
    with pytest.raises(ConfigError, match="teacher has 4 layers"):
        student_config(bert_config, StudentConfig(num_layers=2, init_layers=[0, 4]))


# --------------------------------------------------------------------------------------------
# Building and initialising
# --------------------------------------------------------------------------------------------


def teacher_key(student_key: str, layers: list[int]) -> str:
    return LAYER.sub(lambda m: f"encoder.layer.{layers[int(m[1])]}.", student_key)


@pytest.mark.parametrize(
    "init_layers, expected",
    [("uniform", [0, 2]), ("first", [0, 1]), ("last", [2, 3]), ([3, 1], [3, 1])],
)
def test_build_student_copies_chosen_teacher_layers(teacher_model, init_layers, expected):
    cfg = StudentConfig(num_layers=2, init_layers=init_layers)
    student = build_student(teacher_model, cfg, AutoModelForSequenceClassification)
    assert student.config.num_hidden_layers == 2
    teacher_state, student_state = teacher_model.state_dict(), student.state_dict()
    for key, value in student_state.items():
        assert torch.equal(value, teacher_state[teacher_key(key, expected)]), key
    # spot checks by name, independent of the key rewriting above
    for i, t in enumerate(expected):
        s_q = student.bert.encoder.layer[i].attention.self.query.weight
        assert torch.equal(s_q, teacher_model.bert.encoder.layer[t].attention.self.query.weight)
    assert torch.equal(
        student.bert.embeddings.word_embeddings.weight,
        teacher_model.bert.embeddings.word_embeddings.weight,
    )
    assert torch.equal(student.classifier.weight, teacher_model.classifier.weight)


def test_build_student_copies_rather_than_shares(teacher_model):
    student = build_student(
        teacher_model, StudentConfig(num_layers=2), AutoModelForSequenceClassification
    )
    with torch.no_grad():
        student.classifier.weight.add_(1.0)
    assert not torch.equal(student.classifier.weight, teacher_model.classifier.weight)


def test_build_student_random_differs_from_teacher(teacher_model):
    cfg = StudentConfig(num_layers=2, init="random")
    student = build_student(teacher_model, cfg, AutoModelForSequenceClassification, seed=123)
    assert student.config.num_hidden_layers == 2
    s_layer, t_layer = student.bert.encoder.layer[0], teacher_model.bert.encoder.layer[0]
    assert not torch.equal(s_layer.attention.self.query.weight, t_layer.attention.self.query.weight)
    assert not torch.equal(
        student.bert.embeddings.word_embeddings.weight,
        teacher_model.bert.embeddings.word_embeddings.weight,
    )


def test_build_student_random_may_be_narrower(teacher_model):
    cfg = StudentConfig(
        num_layers=2, hidden_size=16, num_heads=2, intermediate_size=32, init="random"
    )
    student = build_student(teacher_model, cfg, AutoModelForSequenceClassification)
    assert student.config.hidden_size == 16
    assert student.bert.embeddings.word_embeddings.weight.shape == (100, 16)


def test_build_student_is_seeded(teacher_model):
    cfg = StudentConfig(num_layers=2, init="random")
    a = build_student(teacher_model, cfg, AutoModelForSequenceClassification, seed=5)
    b = build_student(teacher_model, cfg, AutoModelForSequenceClassification, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pretrained_init_needs_a_model(teacher_model):
    with pytest.raises(ConfigError, match="student.pretrained"):
        build_student(
            teacher_model, StudentConfig(init="pretrained"), AutoModelForSequenceClassification
        )


def test_copy_teacher_layers_returns_key_mapping(make_bert):
    teacher, student = make_bert(seed=0, layers=4), make_bert(seed=1, layers=2)
    mapping = copy_teacher_layers(student, teacher, [0, 3])
    assert set(mapping) == set(student.state_dict())
    assert (
        mapping["bert.encoder.layer.0.output.dense.weight"]
        == "bert.encoder.layer.0.output.dense.weight"
    )
    assert (
        mapping["bert.encoder.layer.1.output.dense.weight"]
        == "bert.encoder.layer.3.output.dense.weight"
    )
    assert (
        mapping["bert.embeddings.word_embeddings.weight"]
        == "bert.embeddings.word_embeddings.weight"
    )
    assert mapping["classifier.bias"] == "classifier.bias"
    assert torch.equal(
        student.bert.encoder.layer[1].output.dense.weight,
        teacher.bert.encoder.layer[3].output.dense.weight,
    )


def test_copy_teacher_layers_fails_on_width_mismatch(make_bert):
    teacher, student = make_bert(layers=4), make_bert(layers=2, hidden=16, heads=2)
    with pytest.raises(ConfigError, match="no weights matching"):
        copy_teacher_layers(student, teacher, [0, 1])


# --------------------------------------------------------------------------------------------
# Width-relative presets, pruned shapes, pretrained student folders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("half-width", (12, 384, 6, 1536)),
        ("third-width", (12, 256, 4, 1024)),
        ("quarter-width", (12, 192, 3, 768)),
    ],
)
def test_width_presets_keep_depth_and_head_size(make_config, preset, expected):
    teacher = make_config(layers=12, hidden=768, heads=12, intermediate=3072)
    assert shape_tuple(student_shape(teacher, StudentConfig(preset=preset))) == expected


def test_width_preset_needs_divisible_heads(bert_config):
    with pytest.raises(ConfigError, match="divides the teacher's 4 attention heads by 3"):
        student_shape(bert_config, StudentConfig(preset="third-width"))


def test_pruned_derives_heads_from_hidden_at_teacher_head_size(bert_config):
    shape = student_shape(bert_config, StudentConfig(init="pruned", hidden_size=24))
    assert shape_tuple(shape) == (4, 24, 3, 64)
    shape = student_shape(bert_config, StudentConfig(init="pruned", preset="half-width"))
    assert shape_tuple(shape) == (4, 16, 2, 32)


def test_teacher_init_still_refuses_width_presets(bert_config):
    with pytest.raises(ConfigError, match="init: random"):
        student_config(bert_config, StudentConfig(preset="half-width"))


def save_student_folder(model, folder):
    """A folder as kdformer's distill writes it: weights, config, kdformer_config.yaml, card."""
    model.save_pretrained(folder)
    (folder / "kdformer_config.yaml").write_text("student: {}\n")
    (folder / "README.md").write_text("# student\n")
    return folder


def test_pretrained_loads_a_kdformer_student_folder(make_bert, tmp_path):
    saved = make_bert(seed=3, layers=2)
    saved.config.id2label, saved.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    folder = save_student_folder(saved, tmp_path / "student")
    teacher = make_bert(seed=0)
    teacher.config.id2label, teacher.config.label2id = saved.config.id2label, saved.config.label2id
    cfg = StudentConfig(init="pretrained", pretrained=str(folder), num_layers=1)  # shape ignored
    student = build_student(teacher, cfg, AutoModelForSequenceClassification)
    assert student.config.num_hidden_layers == 2
    assert all(
        torch.equal(a, b)
        for a, b in zip(student.state_dict().values(), saved.state_dict().values())
    )


def test_pretrained_student_of_another_task_gets_a_new_head(make_bert, tmp_path):
    saved = make_bert(seed=3, layers=2)  # 2 labels
    folder = save_student_folder(saved, tmp_path / "student")
    teacher = make_bert(seed=0, num_labels=3)
    cfg = StudentConfig(init="pretrained", pretrained=str(folder))
    student = build_student(teacher, cfg, AutoModelForSequenceClassification)
    assert student.config.num_labels == 3 and student.classifier.weight.shape == (3, 32)
    assert torch.equal(
        student.bert.encoder.layer[1].output.dense.weight,
        saved.bert.encoder.layer[1].output.dense.weight,
    )


def test_pretrained_general_student_without_head(make_config, make_bert, tmp_path):
    import transformers

    torch.manual_seed(0)
    body = transformers.BertModel(make_config(layers=2))
    body.save_pretrained(tmp_path / "general")
    teacher = make_bert(seed=0, num_labels=1)
    teacher.config.problem_type = "regression"
    cfg = StudentConfig(init="pretrained", pretrained=str(tmp_path / "general"))
    student = build_student(teacher, cfg, AutoModelForSequenceClassification)
    assert student.config.num_labels == 1 and student.config.problem_type == "regression"
    assert torch.equal(
        student.bert.embeddings.word_embeddings.weight, body.embeddings.word_embeddings.weight
    )
