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


def test_explore_times_candidates_and_sorts_by_latency(make_config, tmp_path):
    teacher = make_config(layers=3, hidden=64, heads=2, intermediate=256)
    teacher.save_pretrained(tmp_path)
    target = resolve_target(like=str(tmp_path), ratio=0.6)
    rows = explore(
        target, tolerance=0.4, batch_size=2, seq_length=8, repeats=1, warmup=0, device="cpu"
    )
    *candidates, reference = rows
    assert reference.note == "teacher" and reference.layers == 3
    assert candidates and all(isinstance(r, Candidate) and r.latency_ms > 0 for r in rows)
    latencies = [r.latency_ms for r in candidates]
    assert latencies == sorted(latencies)


def test_explore_keeps_the_closest_candidates():
    target = resolve_target("11M")
    rows = explore(target, tolerance=0.15, latency=False, max_candidates=3)
    everything = candidate_shapes(target, 0.15)
    closest = sorted(abs(r.parameters - 11e6) for r in everything)[:3]
    assert sorted(abs(r.parameters - 11e6) for r in rows) == closest
    assert all(r.latency_ms is None for r in rows)


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


def test_counting_builds_nothing_in_memory():
    # meta-device counting: a BERT-large-sized shape counts instantly with no real weights
    assert count_shape_parameters(transformers.BertConfig(), 24, 1024, 16, 4096) > 330e6
    assert torch.empty(0).device.type == "cpu"  # the default device is left alone
