"""Every declared model family through the same checks, on tiny random models of each
``transformers`` class: taps, student shaping, one training step with every knowledge type the
family supports, refusals of the ones it does not, pruning, and each family's input rules."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from pydantic import TypeAdapter

from kdformer.config import StudentConfig
from kdformer.config.base import ConfigError
from kdformer.families import check_models, families, family_of
from kdformer.features import FeatureNeeds, OutputSpec, extract_features, resolve_taps
from kdformer.knowledge import KnowledgeConfig
from kdformer.models import prepare_family
from kdformer.objective import DistillationObjective
from kdformer.pruning import compute_importance, copy_pruned_weights, plan_pruning
from kdformer.students import build_student, student_config

SHAPE = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=80, num_labels=3,
)  # fmt: skip
SEQ = 16

# name: (config class, model class, config fields beyond SHAPE)
MODELS = {
    "BERT": (transformers.BertConfig, transformers.BertForSequenceClassification, {}),
    "RoBERTa": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification, {}),
    "ELECTRA": (transformers.ElectraConfig, transformers.ElectraForSequenceClassification, {}),
    "DistilBERT": (
        transformers.DistilBertConfig,
        transformers.DistilBertForSequenceClassification,
        {"dim": 32, "n_layers": 4, "n_heads": 4, "hidden_dim": 64},
    ),
    "DeBERTa-v2": (
        transformers.DebertaV2Config,
        transformers.DebertaV2ForSequenceClassification,
        {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "max_relative_positions": 16},
    ),
    "Longformer": (
        transformers.LongformerConfig,
        transformers.LongformerForSequenceClassification,
        {"attention_window": [4, 4, 8, 8]},
    ),
    "BigBird": (
        transformers.BigBirdConfig,
        transformers.BigBirdForSequenceClassification,
        {"attention_type": "original_full"},
    ),
    "Nyströmformer": (
        transformers.NystromformerConfig,
        transformers.NystromformerForSequenceClassification,
        {"num_landmarks": 4, "segment_means_seq_len": SEQ, "conv_kernel_size": 3},
    ),
    "ModernBERT": (
        transformers.ModernBertConfig,
        transformers.ModernBertForSequenceClassification,
        {
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1,
            "sep_token_id": 2, "global_attn_every_n_layers": 2, "local_attention": 8,
        },
    ),
}  # fmt: skip

#: Knowledge configs, one per type, as a user writes them.
KNOWLEDGE = {
    "logits": {"type": "logits"},
    "hidden": {"type": "hidden"},
    "embedding": {"type": "embedding"},
    "attention": {"type": "attention"},
    "value_relation": {"type": "value_relation"},
    "qkv_relations": {"type": "qkv_relations", "relation_heads": 4},
    "intermediate": {"type": "intermediate"},
    "sentence_embedding": {"type": "sentence_embedding"},
    "similarity": {"type": "similarity"},
}
OUTPUTS = (OutputSpec("logits", "labels"),)


def knowledge_config(data: dict):
    return TypeAdapter(KnowledgeConfig).validate_python(data)


def make_model(name: str, seed: int = 0, **changes):
    config_class, model_class, extra = MODELS[name]
    fields = {**SHAPE, **extra, **changes}
    if name == "DistilBERT":
        fields = {k: v for k, v in fields.items() if k not in ("hidden_size", "num_hidden_layers",
                  "num_attention_heads", "intermediate_size")}  # fmt: skip
    torch.manual_seed(seed)
    model = model_class(config_class(**fields))
    return prepare_family(model).eval()


def make_batch(length: int = SEQ, pad: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (2, length), generator=generator)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length - pad :] = 0
    ids[1, length - pad :] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.tensor([0, 2]),
    }


def test_every_family_of_the_issue_is_declared():
    names = {f.name for f in families()}
    assert set(MODELS) <= names
    for name in MODELS:
        assert family_of(make_model(name).config).name == name


@pytest.mark.parametrize("name", list(MODELS))
def test_taps_give_batch_seq_width_for_every_layer(name):
    model = make_model(name)
    requests = {
        (kind, layer) for kind in ("query", "key", "value", "intermediate") for layer in (1, 4)
    }
    needs = FeatureNeeds(hidden_states=True, layer_modules=frozenset(requests))
    features = extract_features(model, make_batch(), needs)
    family = family_of(model)
    for (kind, _layer), tensor in features.layer_modules.items():
        width = family.intermediate_size(model.config) if kind == "intermediate" else 32
        assert tensor.shape == (2, SEQ, width), (name, kind, tensor.shape)
    assert len(features.hidden_states) == 5
    # the layer-1 query tap is the query projection of the embedding output
    names = resolve_taps(model, {("query", 1)})
    assert names[("query", 1)][0].startswith(family.layers_prefix(model) + ".0.")


@pytest.mark.parametrize("name", list(MODELS))
def test_half_depth_student_trains_one_step_with_every_supported_knowledge_type(name):
    teacher = make_model(name)
    family = family_of(teacher)
    supported = family.knowledge_types(teacher.config)
    student = build_student(teacher, StudentConfig(preset="half", init="teacher"), type(teacher))
    assert student.config.num_hidden_layers == 2
    for key in family.per_layer_keys:  # per-layer settings follow the copied layers (0 and 2)
        assert list(getattr(student.config, key)) == [
            getattr(teacher.config, key)[t] for t in (0, 2)
        ]
    batch = make_batch()
    torch.manual_seed(0)
    with torch.no_grad():  # copied weights can match the teacher's outputs exactly: nudge them
        for parameter in student.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=0.01)
    for kind in sorted(supported):
        objective = DistillationObjective(
            [knowledge_config(KNOWLEDGE[kind])], teacher.config, student.config, OUTPUTS
        )
        student.train()
        s = extract_features(student, batch, objective.needs_for("student"))
        with torch.no_grad():
            t = extract_features(teacher, batch, objective.needs_for("teacher"))
        loss = objective(s, t, batch).loss
        assert torch.isfinite(loss), (name, kind)
        student.zero_grad()
        loss.backward()
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), (name, kind)
        assert loss.item() > 0 and any(g.abs().sum() > 0 for g in grads), (name, kind)


#: The knowledge types each family refuses (its attention is not softmax(QK^T/sqrt(d)) plus
#: the padding mask, so hooked Q/K cannot rebuild it), with the model settings that make it so.
REFUSING = {
    "DeBERTa-v2": ("DeBERTa-v2", {}, {"attention"}),
    "Nyströmformer": ("Nyströmformer", {}, {"attention"}),
    "ModernBERT": ("ModernBERT", {}, {"attention"}),
    "BigBird block_sparse": (
        "BigBird",
        {"attention_type": "block_sparse", "block_size": 2, "num_random_blocks": 1},
        {"attention"},
    ),
}
#: The families, as MODELS builds them, that refuse nothing (BigBird only with block_sparse).
REFUSING_NOTHING = ["BERT", "BigBird", "DistilBERT", "ELECTRA", "Longformer", "RoBERTa"]


def test_every_family_either_refuses_its_listed_types_or_nothing():
    refusing = {name for name, changes, _ in REFUSING.values() if not changes}
    assert refusing.isdisjoint(REFUSING_NOTHING)
    assert refusing | set(REFUSING_NOTHING) == set(MODELS)


@pytest.mark.parametrize("case", list(REFUSING))
def test_unsupported_knowledge_fails_before_training_naming_family_and_supported(case):
    name, changes, refused = REFUSING[case]
    model = make_model(name, **changes)
    family = family_of(model)
    supported = family.knowledge_types(model.config)
    unsupported = sorted(set(KNOWLEDGE) - supported)
    assert unsupported == sorted(refused)  # non-empty: the loop below checks something
    for kind in unsupported:
        with pytest.raises(ConfigError) as info:
            DistillationObjective(
                [knowledge_config(KNOWLEDGE[kind])], model.config, model.config, OUTPUTS
            )
        message = str(info.value)
        assert family.name in message and kind in message
        assert message.split("supports: ")[1] == ", ".join(sorted(supported))


@pytest.mark.parametrize("name", REFUSING_NOTHING)
def test_families_that_refuse_nothing_build_an_objective_of_every_knowledge_type(name):
    model = make_model(name)
    assert family_of(model).knowledge_types(model.config) >= set(KNOWLEDGE)
    for kind, data in KNOWLEDGE.items():
        objective = DistillationObjective(
            [knowledge_config(data)], model.config, model.config, OUTPUTS
        )
        assert list(objective.terms) == [kind]


def test_which_families_supply_attention_maps():
    attention = {
        n
        for n in MODELS
        if "attention" in family_of(make_model(n)).knowledge_types(make_model(n).config)
    }
    assert attention == {"BERT", "RoBERTa", "ELECTRA", "DistilBERT", "Longformer", "BigBird"}
    sparse = make_model("BigBird", attention_type="block_sparse", block_size=2, num_random_blocks=1)
    assert "attention" not in family_of(sparse).knowledge_types(sparse.config)


@pytest.mark.parametrize("name", list(MODELS))
def test_attention_free_knowledge_of_a_student_equal_to_its_teacher_is_zero(name):
    teacher = make_model(name)
    student = copy.deepcopy(teacher)
    batch = make_batch()
    family = family_of(teacher)
    for kind in sorted(family.knowledge_types(teacher.config) - {"logits"}):
        objective = DistillationObjective(
            [knowledge_config(KNOWLEDGE[kind])], teacher.config, student.config, OUTPUTS
        )
        s = extract_features(student, batch, objective.needs_for("student"))
        t = extract_features(teacher, batch, objective.needs_for("teacher"))
        assert objective(s, t, batch).loss.item() == pytest.approx(0, abs=1e-5), (name, kind)


@pytest.mark.parametrize("name", list(MODELS))
def test_pruning_only_ffn_neurons_equals_the_teacher_with_those_neurons_masked(name):
    teacher = make_model(name)
    family = family_of(teacher)
    batches = [make_batch()]
    importance = compute_importance(teacher, batches, label_keys=("labels",))
    student = make_model(name, seed=1, intermediate_size=32, hidden_dim=32)
    if name != "DistilBERT":
        student = make_model(name, seed=1, intermediate_size=32)
    plan = plan_pruning(importance, student.config, [0, 1, 2, 3])
    copy_pruned_weights(student, teacher, plan)
    masks = []
    for layer, kept in zip(family.layer_list(teacher), plan.neurons):
        keep = torch.zeros(family.intermediate_size(teacher.config))
        keep[kept] = 1

        def hook(_m, inputs, keep=keep):
            return (inputs[0] * keep, *inputs[1:])

        masks.append(layer.get_submodule(family.ffn_output).register_forward_pre_hook(hook))
    batch = {k: v for k, v in make_batch().items() if k != "labels"}
    if name == "DistilBERT":
        batch.pop("token_type_ids")
    with torch.no_grad():
        expected = teacher(**batch).logits
        got = student.eval()(**batch).logits
    for handle in masks:
        handle.remove()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_half_width_pruned_student_runs(name):
    teacher = make_model(name)
    cfg = StudentConfig(preset="half-width", init="pruned", num_layers=2)
    student = build_student(teacher, cfg, type(teacher), data=[make_batch()])
    assert student.config.hidden_size == 16 and student.config.num_attention_heads == 2
    with torch.no_grad():
        out = extract_features(
            student.eval(), make_batch(), FeatureNeeds(outputs=frozenset({"logits"}))
        )
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()


# ---- each family's rules -------------------------------------------------------------------


def test_longformer_taps_are_trimmed_to_the_batch_and_windows_follow_the_student():
    model = make_model("Longformer")
    features = extract_features(
        model, make_batch(length=10), FeatureNeeds(layer_modules=frozenset({("query", 3)}))
    )
    assert features.layer_modules[("query", 3)].shape == (2, 10, 32)  # model pads to 16 inside
    config = student_config(
        model.config, StudentConfig(num_layers=2, init="teacher", init_layers=[1, 3])
    )
    assert config.attention_window == [4, 8]


def test_longformer_qa_gives_the_question_global_attention():
    """Extractive QA: [CLS] and the question's tokens are global (Longformer's own QA head
    would count three separators, which BERT pairs lack); other heads keep [CLS] alone."""
    shape = {**SHAPE, "num_labels": 2}  # start and end
    config = transformers.LongformerConfig(
        **shape, attention_window=[4, 4, 8, 8], type_vocab_size=2
    )
    torch.manual_seed(0)
    qa = prepare_family(transformers.LongformerForQuestionAnswering(config)).eval()
    batch = make_batch(length=12)
    batch.pop("labels")
    batch["token_type_ids"][:, 4:] = 1  # [CLS] q q [SEP] | context ... (row 1: 3 pads)
    expected = torch.zeros_like(batch["input_ids"])
    expected[:, :4] = 1
    first_only = torch.zeros_like(expected)
    first_only[:, 0] = 1
    with torch.no_grad():
        auto = qa(**batch)
        given = qa(**batch, global_attention_mask=expected)
        cls_only = qa(**batch, global_attention_mask=first_only)
    torch.testing.assert_close(auto.start_logits, given.start_logits)
    assert not torch.allclose(auto.start_logits, cls_only.start_logits)
    single = {**batch, "token_type_ids": torch.zeros_like(batch["input_ids"])}
    with torch.no_grad():  # one segment: no question to find, [CLS] alone
        alone = qa(**single)
        first = qa(**single, global_attention_mask=first_only)
    torch.testing.assert_close(alone.start_logits, first.start_logits)
    classifier = make_model("Longformer")
    with torch.no_grad():
        cls_auto = classifier(**batch)
        cls_given = classifier(**batch, global_attention_mask=first_only)
    torch.testing.assert_close(cls_auto.logits, cls_given.logits)


def test_longformer_qa_without_token_types_takes_the_question_before_the_first_separator():
    """RoBERTa-style pairs (``<s> q </s></s> c </s>``, no token types): the tokens before the
    first separator are global, as Longformer's own QA head makes them; a row with one
    separator (no pair) keeps [CLS] alone."""
    config = transformers.LongformerConfig(
        **{**SHAPE, "num_labels": 2}, attention_window=[4, 4, 8, 8]
    )
    torch.manual_seed(0)
    qa = prepare_family(transformers.LongformerForQuestionAnswering(config)).eval()
    batch = make_batch(length=12)
    batch.pop("labels")
    batch.pop("token_type_ids")
    sep = config.sep_token_id
    batch["input_ids"][:, [3, 4]] = sep  # <s> q q </s></s> context ...
    batch["input_ids"][0, 11] = sep
    batch["input_ids"][1, 8] = sep  # row 1 ends before its 3 pads
    expected = torch.zeros_like(batch["input_ids"])
    expected[:, :3] = 1
    with torch.no_grad():
        auto = qa(**batch)
        given = qa(**batch, global_attention_mask=expected)
    torch.testing.assert_close(auto.start_logits, given.start_logits)
    single = {**batch, "input_ids": batch["input_ids"].clone()}
    single["input_ids"][:, [3, 4]] = 7  # one separator left: not a pair
    first_only = torch.zeros_like(expected)
    first_only[:, 0] = 1
    with torch.no_grad():
        alone = qa(**single)
        first = qa(**single, global_attention_mask=first_only)
    torch.testing.assert_close(alone.start_logits, first.start_logits)


def test_longformer_window_rule():
    model = make_model("Longformer")
    config = copy.deepcopy(model.config)
    config.attention_window = [4, 5, 8, 8]
    with pytest.raises(ConfigError, match="positive even number"):
        check_models([(config, "teacher")], 64)
    config.attention_window = [4, 4]
    with pytest.raises(ConfigError, match="one entry per layer"):
        check_models([(config, "teacher")], 64)


def test_longformer_attention_compares_the_shared_band():
    teacher = make_model("Longformer")
    student = build_student(teacher, StudentConfig(preset="half", init="teacher"), type(teacher))
    objective = DistillationObjective(
        [knowledge_config({"type": "attention", "layers": [[1, 4]]})],
        teacher.config, student.config, OUTPUTS,
    )  # fmt: skip
    term = objective.terms["attention"]
    assert term.band(0) == 2  # student layer 1 copies teacher layer 0 (window 4): 2 each side


def test_bigbird_block_sparse_too_short_is_refused_and_padded_to_max_length():
    model = make_model("BigBird", attention_type="block_sparse", block_size=4, num_random_blocks=2)
    with pytest.raises(ConfigError, match=r"= 36: transformers would fall back to full attention"):
        check_models([(model.config, "teacher")], 36)
    assert check_models([(model.config, "teacher")], 64) == 64


def test_nystromformer_fixed_length_and_padding_mask():
    model = make_model("Nyströmformer")
    assert check_models([(model.config, "student")], SEQ) == SEQ
    with pytest.raises(ConfigError, match="exactly segment_means_seq_len = 16"):
        check_models([(model.config, "student")], 32)
    # transformers' landmark attention fails on any padded batch; the family's hook repairs it
    raw = transformers.NystromformerForSequenceClassification(model.config).eval()
    batch = {k: v for k, v in make_batch().items() if k != "labels"}
    with pytest.raises(RuntimeError):
        raw(**batch)
    other = {**batch, "input_ids": batch["input_ids"].clone()}
    other["input_ids"][1, SEQ - 3 :] = 7  # what padded positions hold must not matter
    with torch.no_grad():
        logits = model(**batch).logits
        again = model(**other).logits
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, again)


def test_models_needing_different_fixed_lengths_are_refused():
    a = make_model("Nyströmformer")
    b = make_model("Nyströmformer", segment_means_seq_len=32)
    with pytest.raises(ConfigError, match="different fixed lengths"):
        check_models([(a.config, "teacher"), (b.config, "student")], 16)


def test_modernbert_pkd_summary_follows_mean_pooling():
    model = make_model("ModernBERT", classifier_pooling="mean")
    from kdformer.knowledge import ModelShape

    assert ModelShape.of(model.config).summary == "mean"
    assert ModelShape.of(make_model("BERT").config).summary == "first"


# ---- maps in query chunks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "knowledge",
    [
        {"type": "attention"},
        {"type": "attention", "loss": "mse"},
        {"type": "attention", "heads": "average", "layers": "many_to_one"},
        {"type": "value_relation", "layers": "many_to_one"},
        {"type": "qkv_relations", "relation_heads": 4, "layers": "uniform"},
    ],
)
@pytest.mark.parametrize("name", ["BERT", "Longformer"])
def test_chunked_maps_give_the_unchunked_loss_and_gradients(knowledge, name):
    teacher = make_model(name)
    student = build_student(teacher, StudentConfig(preset="half", init="teacher"), type(teacher))
    batch = make_batch()
    results = []
    for chunk in (None, 3):
        objective = DistillationObjective(
            [knowledge_config({**knowledge, "query_chunk": chunk})],
            teacher.config, student.config, OUTPUTS,
        )  # fmt: skip
        if chunk is None:  # one chunk: the default at this length
            assert all(t.config.query_chunk is None for t in objective.terms.values())
        student.zero_grad()
        s = extract_features(student.eval(), batch, objective.needs_for("student"))  # no dropout
        with torch.no_grad():
            t = extract_features(teacher, batch, objective.needs_for("teacher"))
        loss = objective(s, t, batch).loss
        loss.backward()
        grads = [p.grad.clone() for p in student.parameters() if p.grad is not None]
        results.append((loss.detach(), grads))
    (loss_full, grads_full), (loss_chunked, grads_chunked) = results
    assert loss_full.item() > 0
    torch.testing.assert_close(loss_chunked, loss_full, rtol=1e-5, atol=1e-7)
    for a, b in zip(grads_chunked, grads_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_band_covering_the_sequence_equals_full_attention_and_a_narrow_band_is_hand_computed():
    from kdformer.knowledge.layers import key_mask, masked_log_softmax

    mask = torch.tensor([[1, 1, 1, 1, 0]])
    full = key_mask(mask, 0, 5)
    assert torch.equal(key_mask(mask, 0, 5, band=10), full)
    narrow = key_mask(mask, 1, 3, band=1)[0, 0]
    assert narrow.tolist() == [[True, True, True, False, False], [False, True, True, True, False]]
    scores = torch.zeros(1, 1, 2, 5)
    probs = masked_log_softmax(scores, key_mask(mask, 1, 3, band=1)).exp()[0, 0]
    torch.testing.assert_close(probs[0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0, 0]))


def test_families_declare_how_a_converted_model_starts():
    """Conversion asks the target family where each weight comes from (no module names in
    kdformer.conversion)."""
    from kdformer.families.bert import BERT
    from kdformer.families.longformer import LONGFORMER
    from kdformer.families.nystromformer import NYSTROMFORMER

    key = "encoder.layer.3.attention.self.key_global.weight"
    assert LONGFORMER.converted_weight_source(key) == "encoder.layer.3.attention.self.key.weight"
    assert (
        NYSTROMFORMER.converted_weight_source("encoder.layer.0.attention.self.conv.weight") is None
    )
    assert BERT.converted_weight_source(key) == key
    assert BERT.position_table() == "embeddings.position_embeddings.weight"
    assert BERT.may_lack("pooler.dense.weight") and not BERT.may_lack("embeddings.x")


def test_families_say_where_positions_start_and_so_the_usable_length():
    import transformers

    from kdformer.families import position_limit

    roberta = transformers.RobertaConfig(max_position_embeddings=514, pad_token_id=1)
    nystrom = transformers.NystromformerConfig(max_position_embeddings=514)
    bert = transformers.BertConfig(max_position_embeddings=512)
    # Nyströmformer's table holds max_position_embeddings + 2 rows: all 514 positions usable
    assert [position_limit(c) for c in (roberta, nystrom, bert)] == [512, 514, 512]
    small = transformers.NystromformerConfig(
        max_position_embeddings=16, hidden_size=8, num_attention_heads=2, num_hidden_layers=1,
        intermediate_size=8, segment_means_seq_len=16, num_landmarks=4, vocab_size=20,
    )  # fmt: skip
    model = transformers.NystromformerModel(small).eval()
    ids = torch.ones(1, position_limit(small), dtype=torch.long)
    assert model(input_ids=ids).last_hidden_state.shape[1] == 16
    with pytest.raises((IndexError, RuntimeError)):
        model(input_ids=torch.ones(1, 17, dtype=torch.long))
    longformer = transformers.LongformerConfig(max_position_embeddings=4098, pad_token_id=1)
    assert position_limit(longformer) == 4096


def test_block_sparse_bigbird_trains_under_bf16_autocast():
    """transformers' block-sparse attention fails under autocast (float32 softmax weights
    scattered into a bf16 map); the family runs that module in float32, so a bf16 step works
    and agrees with the float32 forward to bf16 precision."""
    import transformers

    from kdformer.models import prepare_family

    config = transformers.BigBirdConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=128, block_size=8, num_random_blocks=1,
        attention_type="block_sparse",
    )  # fmt: skip
    torch.manual_seed(0)
    model = prepare_family(transformers.BigBirdForTokenClassification(config))
    ids = torch.randint(0, 50, (2, 128), generator=torch.Generator().manual_seed(0))
    model.eval()  # no dropout; random blocks fixed in eval mode
    with torch.no_grad():
        full = model(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(input_ids=ids).logits
    assert torch.allclose(mixed.float(), full, atol=0.05), (mixed.float() - full).abs().max()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=torch.zeros(2, 128, dtype=torch.long)).loss
    loss.backward()
    assert torch.isfinite(loss) and model.classifier.weight.grad is not None
    assert not torch.is_autocast_enabled("cpu")  # every hook restored what it changed
