"""Width-depth explorer: budgets, exact parameter counts, the candidate grid and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from transformers import AutoModel
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config import ConfigError
from kdformer.explorer import (
    Candidate,
    candidate_shapes,
    count_shape_parameters,
    explore,
    parse_budget,
    proposal_reason,
    rank_key,
    resolve_target,
    shape_config,
)
from kdformer.models import count_parameters

runner = CliRunner()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("11M", 11_000_000),
        ("4.4M", 4_400_000),
        ("500k", 500_000),
        ("500K", 500_000),
        ("22000000", 22_000_000),
        ("22_000_000", 22_000_000),
        ("1.5b", 1_500_000_000),
        (" 7 m ", 7_000_000),
        (3000, 3000),
    ],
)
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["abc", "11X", "", "-5M", "0", "1.2.3M"])
def test_parse_budget_rejects(text):
    with pytest.raises(ConfigError, match="budget"):
        parse_budget(text)


@pytest.mark.parametrize(
    "shape", [(1, 64, 1, 256), (2, 128, 2, 512), (3, 192, 3, 768), (4, 96, 3, 200)]
)
def test_counts_equal_instantiated_models(shape):
    base = transformers.BertConfig()  # BERT-base vocabulary, as without --like
    model = AutoModel.from_config(shape_config(base, *shape))
    assert count_shape_parameters(base, *shape) == count_parameters(model)


def test_candidates_counts_equal_instantiated_models(make_config, tmp_path):
    teacher = make_config(layers=4, hidden=64, heads=4, intermediate=256)
    teacher.save_pretrained(tmp_path)
    target = resolve_target(like=str(tmp_path), ratio=0.5)
    rows = candidate_shapes(target, tolerance=0.3)
    assert rows
    for row in rows:
        config = shape_config(teacher, row.layers, row.hidden, row.heads, row.intermediate)
        model = AutoModel.from_config(config)
        assert row.parameters == count_parameters(model), row


def test_candidates_are_on_the_grid_and_within_tolerance():
    target = resolve_target("11M")
    rows = candidate_shapes(target, tolerance=0.15)
    assert len(rows) >= 3
    for row in rows:
        assert 0.85 * 11e6 <= row.parameters <= 1.15 * 11e6
        assert row.hidden == 64 * row.heads and row.intermediate == 4 * row.hidden
        assert 1 <= row.layers <= 12
    shapes = {(r.layers, r.hidden, r.heads, r.intermediate): r for r in rows}
    assert shapes[(4, 256, 4, 1024)].note == "mini"  # BERT-mini, 11.2M with its classifier
    assert rows == sorted(rows, key=lambda r: r.parameters)
    tighter = candidate_shapes(target, tolerance=0.05)
    assert 0 < len(tighter) < len(rows)
    assert all(abs(r.parameters / 11e6 - 1) <= 0.05 for r in tighter)


def test_like_teacher_uses_its_head_size_and_bounds(make_config, tmp_path):
    teacher = make_config(layers=6, hidden=96, heads=3, intermediate=384)  # head size 32
    teacher.save_pretrained(tmp_path)
    target = resolve_target(like=str(tmp_path), ratio=0.5)
    full = count_shape_parameters(teacher, 6, 96, 3, 384)
    assert target.budget == round(0.5 * full) and target.head_size == 32
    assert target.teacher_shape.parameters == full
    rows = candidate_shapes(target, tolerance=0.5)
    assert rows and all(r.hidden % 32 == 0 and r.hidden <= 96 and r.layers <= 6 for r in rows)
    notes = {(r.layers, r.hidden): r.note for r in rows}
    assert notes.get((3, 96)) == "half"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give a budget"),
        ({"params": "11M", "like": None, "ratio": 0.5}, "give --like"),
        ({"ratio": 0.5}, "give --like"),
    ],
)
def test_resolve_target_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resolve_target(**kwargs)


def test_explore_times_candidates_and_ranks_them_by_the_guideline(make_config, tmp_path):
    teacher = make_config(layers=3, hidden=64, heads=2, intermediate=256)
    teacher.save_pretrained(tmp_path)
    target = resolve_target(like=str(tmp_path), ratio=0.6)
    rows = explore(
        target, tolerance=0.4, batch_size=2, seq_length=8, repeats=1, warmup=0, device="cpu"
    )
    *candidates, reference = rows
    assert reference.note == "teacher" and reference.layers == 3
    assert candidates and all(isinstance(r, Candidate) and r.latency_ms > 0 for r in rows)
    assert candidates == sorted(candidates, key=lambda r: rank_key(target, r))


def test_explore_keeps_the_best_ranked_candidates():
    target = resolve_target("11M")
    rows = explore(target, tolerance=0.15, latency=False, max_candidates=3)
    everything = sorted(candidate_shapes(target, 0.15), key=lambda r: rank_key(target, r))
    assert [(r.layers, r.hidden) for r in rows] == [(r.layers, r.hidden) for r in everything[:3]]
    assert all(r.latency_ms is None for r in rows)
    assert all(0.85 * 11e6 <= r.parameters <= 1.15 * 11e6 for r in rows)


def test_cli_params_without_latency():
    result = runner.invoke(app, ["students", "--params", "4.4M", "--no-latency"])
    assert result.exit_code == 0, result.output
    assert "embeddings and pooler included" in result.output
    assert "tiny" in result.output  # BERT-tiny, 2 x 128, is 4.4M with its classifier
    assert "student.num_layers=" in result.output


def test_cli_params_1m_explains_why_nothing_fits():
    result = runner.invoke(app, ["students", "--params", "1M", "--no-latency"])
    assert result.exit_code == 1
    assert "30,522 tokens x 64" in result.output and "smallest shape" in result.output


def test_cli_json_rows():
    result = runner.invoke(app, ["students", "--params", "11M", "--no-latency", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows and {"layers", "hidden", "heads", "intermediate", "parameters"} <= set(rows[0])


def test_cli_with_latency(make_config, tmp_path):
    make_config(layers=3, hidden=64, heads=2, intermediate=256).save_pretrained(tmp_path)
    args = ["students", "--like", str(tmp_path), "--ratio", "0.6", "--tolerance", "0.4"]
    args += ["--repeats", "1", "--warmup", "0", "--batch-size", "2", "--seq-length", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "speed-up" in result.output and "teacher" in result.output
    assert "student.init=" in result.output


def test_cli_bad_input():
    result = runner.invoke(app, ["students", "--params", "lots"])
    assert result.exit_code == 2 and "cannot read parameter budget" in result.output
    result = runner.invoke(app, ["students", "--ratio", "0.5"])
    assert result.exit_code == 2 and "--like" in result.output


def test_counting_a_large_shape_leaves_the_default_device_alone():
    # meta-device counting (tests/test_budget.py checks no weights are allocated); the
    # default device stays the CPU afterwards
    assert count_shape_parameters(transformers.BertConfig(), 24, 1024, 16, 4096) > 330e6
    assert torch.empty(0).device.type == "cpu"  # the default device is left alone


# --------------------------------------------------------------------------------------------
# Ranking by the guideline (docs/guideline.md): teacher width at >= half depth, then deep pruned
# shapes; one layer and random initialisation only when nothing else fits, each with its reason
# --------------------------------------------------------------------------------------------


@pytest.fixture
def minilm_like(tmp_path) -> str:
    """A config of MiniLM-L6's shape (6 x 384, 12 heads of 32, BERT vocabulary): counted on the
    meta device, so nothing is allocated."""
    transformers.BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536,
    ).save_pretrained(tmp_path)  # fmt: skip
    return str(tmp_path)


def test_half_a_minilm_ranks_deep_pruned_shapes_first_and_one_layer_last(minilm_like):
    """`--like minilm-l6 --ratio 0.5` proposed 1 x 288 (fastest); the guideline (§3, §5) says a
    deep pruned student, and that one layer collapses."""
    target = resolve_target(like=minilm_like, ratio=0.5)
    rows = [r for r in explore(target, latency=False) if r.note != "teacher"]
    best = rows[0]
    assert best.layers == 6 and best.init == "pruned" and best.rank == 1
    assert all(0.85 * target.budget <= r.parameters <= 1.15 * target.budget for r in rows)
    ranks = [r.rank for r in rows]
    assert ranks == sorted(ranks)
    first_one_layer = next(i for i, r in enumerate(rows) if r.layers == 1)
    assert all(r.layers == 1 for r in rows[first_one_layer:])
    assert all(r.why == "1 layer: collapses (§5)" for r in rows if r.layers == 1)
    assert all(r.init != "random" for r in rows)
    deep = [r for r in rows if r.rank == 1]
    assert [r.layers for r in deep] == sorted((r.layers for r in deep), reverse=True)  # §3


def test_teacher_width_at_half_depth_or_more_ranks_first(minilm_like):
    target = resolve_target(like=minilm_like, ratio=0.8)  # 18.2M: 3 x 384 and 4 x 384 fit
    rows = explore(target, latency=False)
    assert [(r.layers, r.hidden, r.init, r.rank) for r in rows[:2]] == [
        (4, 384, "teacher", 0),
        (3, 384, "teacher", 0),
    ]
    assert "§4, §5" in rows[0].why
    reason = proposal_reason(target, rows[0], 0.15)
    assert "teacher layers" in reason and "docs/guideline.md" in reason


def test_one_layer_is_proposed_only_when_nothing_else_fits_and_says_so(minilm_like):
    budget = count_shape_parameters(transformers.BertConfig(), 1, 320, 10, 1280)
    target = resolve_target(params=budget, like=minilm_like)
    rows = [r for r in explore(target, tolerance=0.003, latency=False) if r.note != "teacher"]
    assert [(r.layers, r.hidden) for r in rows] == [(1, 320)]
    reason = proposal_reason(target, rows[0], 0.003)
    assert "majority-class" in reason and "§5" in reason
    assert "no shape of 3 layers or more is within ±0.3% of the budget" in reason


def test_a_shape_no_teacher_layer_can_start_is_random_and_last(make_config, tmp_path):
    """A teacher whose FFN is narrower than 4 x hidden: the grid's teacher-width shapes cannot
    be pruned from it (their FFN is wider), so only random init can start them (§4)."""
    make_config(layers=4, hidden=64, heads=2, intermediate=128).save_pretrained(tmp_path)
    target = resolve_target(like=str(tmp_path), ratio=0.9)
    rows = [r for r in explore(target, tolerance=0.5, latency=False) if r.note != "teacher"]
    random = [r for r in rows if r.init == "random"]
    assert random and all(r.hidden == 64 and r.rank == 5 for r in random)
    assert rows[-len(random) :] == random
    assert all(r.why == "learns nothing at this budget (§4)" for r in random)


def test_cli_params_11m_proposes_a_deep_pruned_student_with_its_reason():
    result = runner.invoke(app, ["students", "--params", "11M", "--no-latency"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    use = text.split("Use one:", 1)[1]
    assert "student.num_layers=1 " not in use and "student.init=random" not in use
    assert "student.num_layers=12 " in use and "student.init=pruned" in use
    assert "Why: half the teacher's depth or more" in text and "(§3)" in text
    assert "--like TEACHER" in text  # without a teacher, say how to rank against one
    assert "Ranked by docs/guideline.md" in text and "init: why" in text


def test_cli_json_rows_carry_init_rank_and_why():
    result = runner.invoke(app, ["students", "--params", "11M", "--no-latency", "--json"])
    rows = json.loads(result.output)
    assert {"init", "rank", "why"} <= set(rows[0])
    assert rows[0]["rank"] == min(r["rank"] for r in rows) and "§" in rows[0]["why"]
