"""Several teachers: the soft-label mix (fixed and confidence weights) by hand, terms routed to a
named teacher or to each with its own projections, refusals, and an end-to-end run with two
tiny teachers of different widths (one read from the cache)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers
from conftest import GLUE, needs_data, save_tiny_glue_teacher, tiny_bert
from pydantic import TypeAdapter
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config.base import ConfigError
from kdformer.features import Features, OutputSpec, extract_features
from kdformer.knowledge import KnowledgeConfig
from kdformer.knowledge.logits import kl_to_mixture, kl_with_temperature, mixture_weights
from kdformer.objective import DistillationObjective
from kdformer.teacher import LiveTeacher, TeacherEnsemble

OUTPUTS = (OutputSpec("logits", "labels"),)


def knowledge(*items: dict):
    return [TypeAdapter(KnowledgeConfig).validate_python(k) for k in items]


def test_mixture_of_one_teacher_is_the_plain_kl():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    weights = mixture_weights([t], [2.0])
    assert torch.equal(weights, torch.ones(1, 5))
    torch.testing.assert_close(kl_to_mixture(s, [t], weights, 2.0), kl_with_temperature(s, t, 2.0))


def test_mixture_kl_and_confidence_weights_by_hand():
    s = torch.tensor([[0.0, 0.0]])
    a, b = torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 0.0]])  # p_a = (.75, .25)
    fixed = mixture_weights([a, b], [3.0, 1.0])
    assert fixed[:, 0].tolist() == [0.75, 0.25]
    # Mix: .75 * (.75, .25) + .25 * (.5, .5) = (.6875, .3125); the student is uniform (T=1).
    p = [0.6875, 0.3125]
    expected = sum(x * math.log(x / 0.5) for x in p)
    assert float(kl_to_mixture(s, [a, b], fixed, 1.0)) == pytest.approx(expected, rel=1e-5)
    # T=2: p_a = softmax(ln 3 / 2, 0) = (sqrt 3, 1) / (1 + sqrt 3), b stays uniform; the mix is
    # compared at T=2 and the KL scaled by T^2 = 4.
    r3 = math.sqrt(3)
    p = [0.75 * r3 / (1 + r3) + 0.25 * 0.5, 0.75 / (1 + r3) + 0.25 * 0.5]
    expected = 4 * sum(x * math.log(x / 0.5) for x in p)
    assert float(kl_to_mixture(s, [a, b], fixed, 2.0)) == pytest.approx(expected, rel=1e-5)
    # Confidence: weights 3 x .75 and 1 x .5, renormalised.
    confident = mixture_weights([a, b], [3.0, 1.0], "confidence")
    assert confident[:, 0].tolist() == pytest.approx([2.25 / 2.75, 0.5 / 2.75])
    # Span outputs: confidence over the real positions only.
    start = torch.tensor([[5.0, 0.0, 9.0]])
    mask = torch.tensor([[True, True, False]])
    w = mixture_weights([start, torch.zeros(1, 3)], [1.0, 1.0], "confidence", mask)
    top = math.exp(5) / (math.exp(5) + 1)
    assert w[:, 0].tolist() == pytest.approx([top / (top + 0.5), 0.5 / (top + 0.5)])


def soft(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def naive_mixture_kl(student, teachers, weights: list[float], temperature: float) -> float:
    """Row by row: the teachers' soft labels at T mixed with ``weights``, KL(mix || student at T)
    times T^2; averaged over rows."""
    rows = student.tolist()
    total = 0.0
    for r, s_row in enumerate(rows):
        members = [soft(t.tolist()[r], temperature) for t in teachers]
        mix = [sum(w * m[c] for w, m in zip(weights, members)) for c in range(len(s_row))]
        q = soft(s_row, temperature)
        total += temperature**2 * sum(p * math.log(p / x) for p, x in zip(mix, q))
    return total / len(rows)


def naive_hidden_mse(student_states, teacher_states, pairs, mask, projections=None) -> float:
    """Per (student layer, teacher layer) pair: the student's states over real tokens, through
    the pair's linear map (x W^T + b) if any, their mean squared difference to the teacher's;
    averaged over pairs."""
    real = mask.bool()
    losses = []
    for index, (s_layer, t_layer) in enumerate(pairs):
        s = student_states[s_layer][real]
        if projections is not None:
            s = s @ projections[index].weight.T + projections[index].bias
        losses.append(float(((s - teacher_states[t_layer][real]) ** 2).mean().detach()))
    return sum(losses) / len(losses)


def two_teachers():
    main = tiny_bert(seed=0, layers=4, hidden=32)
    wide = tiny_bert(seed=1, layers=2, hidden=48, heads=4, intermediate=96)
    student = tiny_bert(seed=2, layers=2, hidden=32)
    return main, wide, student


def test_terms_learn_from_their_teacher_with_its_width(batch):
    main, wide, student = two_teachers()
    with torch.no_grad():  # decided teachers that disagree: soft labels far from uniform
        main.classifier.weight.mul_(40.0)
        wide.classifier.weight.mul_(-40.0)
    objective = DistillationObjective(
        knowledge(
            {"type": "logits"},
            {"type": "hidden", "teacher": "each"},
            {"type": "attention", "teacher": "wide"},
        ),
        main.config, student.config, OUTPUTS, hard_label_weight=0.0,
        other_teachers={"wide": wide.config}, teacher_weights={"main": 1.0, "wide": 3.0},
    )  # fmt: skip
    assert list(objective.terms) == ["logits", "hidden@main", "hidden@wide", "attention"]
    assert objective.targets == {
        "logits": "all", "hidden@main": "main", "hidden@wide": "wide", "attention": "wide"
    }  # fmt: skip
    # Each hidden term projects the 32-wide student onto its own teacher's width.
    assert objective.terms["hidden@main"].projections.mode == "none"
    wide_projection = objective.terms["hidden@wide"].projections
    assert wide_projection.mode != "none"
    assert {tuple(p.shape) for p in wide_projection.parameters()} >= {(48, 32)}
    # The wide teacher has 2 layers: its needs are its own layers, the main teacher's its own.
    assert objective.needs_of_teacher("wide").hidden_layers == {1, 2}
    assert objective.needs_of_teacher("main").hidden_layers == {2, 4}
    assert ("query", 2) in objective.needs_of_teacher("wide").layer_modules
    assert not objective.needs_of_teacher("main").layer_modules

    signal = TeacherEnsemble(
        {
            "main": LiveTeacher(main, objective.needs_of_teacher("main")),
            "wide": LiveTeacher(wide, objective.needs_of_teacher("wide")),
        }
    )
    teachers = signal(batch)
    features = extract_features(student, batch, objective.needs_for("student"))
    out = objective(features, teachers, batch)
    # Each hidden term compares with its own teacher: main (4 layers) uniformly at layers 2 and
    # 4 with no projection; wide (2 layers, 48 wide) at layers 1 and 2 through its projections.
    mask = batch["attention_mask"]
    s_states = features.hidden_states
    expected = naive_hidden_mse(s_states, teachers["main"].hidden_states, [(1, 2), (2, 4)], mask)
    assert float(out.terms["hidden@main"]) == pytest.approx(expected, rel=1e-5)
    expected = naive_hidden_mse(
        s_states, teachers["wide"].hidden_states, [(1, 1), (2, 2)], mask, wide_projection
    )
    assert float(out.terms["hidden@wide"]) == pytest.approx(expected, rel=1e-5)
    # The soft labels are the 1:3 mix of both teachers' at T=2.
    expected = naive_mixture_kl(
        features.logits, [teachers["main"].logits, teachers["wide"].logits], [0.25, 0.75], 2.0
    )
    assert float(out.terms["logits"]) == pytest.approx(expected, rel=1e-5)
    one_teacher = naive_mixture_kl(features.logits, [teachers["main"].logits], [1.0], 2.0)
    assert abs(one_teacher - expected) > 0.1, "the wide teacher changes the soft labels"
    out.loss.backward()
    assert objective.terms["hidden@wide"].projections.parameters().__next__().grad is not None


def test_teacher_choices_are_checked():
    main, wide, student = two_teachers()
    with pytest.raises(ConfigError, match="only logits knowledge"):
        DistillationObjective(
            knowledge({"type": "hidden", "teacher": "all"}), main.config, student.config,
            OUTPUTS, other_teachers={"wide": wide.config},
        )  # fmt: skip
    with pytest.raises(ConfigError, match="names teacher 'other'"):
        DistillationObjective(
            knowledge({"type": "hidden", "teacher": "other"}), main.config, student.config,
            OUTPUTS, other_teachers={"wide": wide.config},
        )  # fmt: skip
    # One teacher: the default soft labels are simply the teacher's, by hand at T=2:
    # teacher softmax(ln 3 / 2, 0) = (sqrt 3, 1) / (1 + sqrt 3) against a uniform student.
    single = DistillationObjective(
        knowledge({"type": "logits"}), main.config, student.config, OUTPUTS
    )
    assert single.targets == {"logits": "main"}
    out = single(
        Features(outputs={"logits": torch.tensor([[0.0, 0.0]])}),
        Features(outputs={"logits": torch.tensor([[math.log(3.0), 0.0]])}),
        {},
    )
    r3 = math.sqrt(3)
    p = [r3 / (1 + r3), 1 / (1 + r3)]
    assert float(out.terms["logits"]) == pytest.approx(4 * sum(x * math.log(2 * x) for x in p))
    from kdformer.config import DistillConfig

    with pytest.raises(ValueError, match="reserved"):
        DistillConfig(teachers=[{"id": "main", "name": "x"}])
    with pytest.raises(ValueError, match="unique"):
        DistillConfig(teachers=[{"id": "a", "name": "x"}, {"id": "a", "name": "y"}])


@pytest.mark.slow
@needs_data(GLUE)
def test_run_with_two_teachers_of_different_widths(tmp_path):
    main = save_tiny_glue_teacher(tmp_path / "main")
    wide = save_tiny_glue_teacher(
        tmp_path / "wide", hidden_size=48, num_hidden_layers=2, intermediate_size=96
    )
    out = tmp_path / "run"
    args = [
        f"output_dir={out}", f"teacher.name={main}", f"task.data_dir={GLUE}",
        "task.max_train_samples=48", "task.max_eval_samples=32", "task.max_length=32",
        "finetune=null", "student.num_layers=2",
        "distill.train={max_steps: 3, batch_size: 16, save_steps: 3, report_to: [], logging_steps: 1}",
        f"distill.teachers=[{{id: wide, name: {wide}, weight: 2.0}}]",
        "distill.teacher_weighting=confidence",
        "distill.knowledge=[{type: logits}, {type: hidden, teacher: each}]",
        f"distill.cache={{enabled: true, dir: {tmp_path / 'cache'}}}",
        "distill.allow_weak_teacher=true",
        "report={latency_repeats: 2, latency_batch_size: 4, latency_seq_length: 16, memory: false}", "export=false",
    ]  # fmt: skip
    result = CliRunner().invoke(app, ["run", "configs/demo.yaml", *args])
    assert result.exit_code == 0, result.output
    state = json.loads((out / "checkpoints/student/checkpoint-3/trainer_state.json").read_text())
    logged = [e for e in state["log_history"] if "loss" in e]
    assert {"loss/logits", "loss/hidden@main", "loss/hidden@wide"} <= set(logged[0])
    # Each teacher has its own cache entry.
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["teacher", "student", "teacher wide"]
    assert report["models"][2]["shape"]["hidden"] == 48
    transformers.AutoModelForSequenceClassification.from_pretrained(out / "student")
