"""Layer maps against the published recipes (TinyBERT for losses, DistilBERT for init)."""

from __future__ import annotations

import pytest

from kdformer.config.base import ConfigError
from kdformer.matching import init_layers, layer_pairs

# (teacher, student) -> expected (student, teacher) pairs, 1-based hidden_states indices.
LAYER_PAIRS = {
    "uniform": {  # TinyBERT g(m) = m * k
        (12, 6): [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)],
        (12, 4): [(1, 3), (2, 6), (3, 9), (4, 12)],
        (6, 3): [(1, 2), (2, 4), (3, 6)],
        (6, 2): [(1, 3), (2, 6)],
    },
    "first": {
        (12, 6): [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)],
        (12, 4): [(1, 1), (2, 2), (3, 3), (4, 4)],
        (6, 3): [(1, 1), (2, 2), (3, 3)],
        (6, 2): [(1, 1), (2, 2)],
    },
    "last": {
        (12, 6): [(1, 7), (2, 8), (3, 9), (4, 10), (5, 11), (6, 12)],
        (12, 4): [(1, 9), (2, 10), (3, 11), (4, 12)],
        (6, 3): [(1, 4), (2, 5), (3, 6)],
        (6, 2): [(1, 5), (2, 6)],
    },
}

# (teacher, student) -> expected 0-based teacher layers copied into student layers 0..n-1.
INIT_LAYERS = {
    "uniform": {  # DistilBERT: every k-th layer from the bottom
        (12, 6): [0, 2, 4, 6, 8, 10],
        (12, 4): [0, 3, 6, 9],
        (6, 3): [0, 2, 4],
        (6, 2): [0, 3],
    },
    "first": {
        (12, 6): [0, 1, 2, 3, 4, 5],
        (12, 4): [0, 1, 2, 3],
        (6, 3): [0, 1, 2],
        (6, 2): [0, 1],
    },
    "last": {
        (12, 6): [6, 7, 8, 9, 10, 11],
        (12, 4): [8, 9, 10, 11],
        (6, 3): [3, 4, 5],
        (6, 2): [4, 5],
    },
}


def cases(table):
    return [
        pytest.param(strategy, t, s, expected, id=f"{strategy}-{t}to{s}")
        for strategy, by_depth in table.items()
        for (t, s), expected in by_depth.items()
    ]


@pytest.mark.parametrize("strategy, teacher, student, expected", cases(LAYER_PAIRS))
def test_layer_pairs_table(strategy, teacher, student, expected):
    assert layer_pairs(strategy, teacher, student) == expected


@pytest.mark.parametrize("strategy, teacher, student, expected", cases(INIT_LAYERS))
def test_init_layers_table(strategy, teacher, student, expected):
    assert init_layers(strategy, teacher, student) == expected


@pytest.mark.parametrize("strategy", ["uniform", "first", "last"])
def test_equal_depths_map_identity(strategy):
    assert layer_pairs(strategy, 6, 6) == [(i, i) for i in range(1, 7)]
    assert init_layers(strategy, 6, 6) == list(range(6))


def test_explicit_pairs_are_returned_as_int_tuples():
    assert layer_pairs([[1, 4], [2, 12]], 12, 2) == [(1, 4), (2, 12)]
    assert layer_pairs([(2, 1), (1, 1)], 12, 2) == [(2, 1), (1, 1)]


def test_explicit_init_layers_are_kept_in_order():
    assert init_layers([11, 0, 5], 12, 3) == [11, 0, 5]


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([[1, 13]], "teacher has 12 layers"),
        ([[1, 0]], "teacher has 12 layers"),
        ([[5, 1]], "student has 4 layers"),
        ([[0, 1]], "student has 4 layers"),
        ([[1, 2, 3]], r"\[student_layer, teacher_layer\]"),
    ],
)
def test_explicit_pairs_out_of_range(pairs, message):
    with pytest.raises(ConfigError, match=message):
        layer_pairs(pairs, 12, 4)


@pytest.mark.parametrize("layers", [[0, 12], [-1, 3]])
def test_explicit_init_layers_out_of_range(layers):
    with pytest.raises(ConfigError, match="teacher has 12 layers"):
        init_layers(layers, 12, 2)


def test_explicit_init_layers_must_match_student_depth():
    with pytest.raises(ConfigError, match="student has 3"):
        init_layers([0, 1], 12, 3)


@pytest.mark.parametrize("strategy", ["uniform", "first", "last"])
def test_student_deeper_than_teacher_raises(strategy):
    with pytest.raises(ConfigError, match=r"student depth \(8\) <= teacher depth \(6\)"):
        layer_pairs(strategy, 6, 8)
    with pytest.raises(ConfigError, match=r"student depth \(8\) <= teacher depth \(6\)"):
        init_layers(strategy, 6, 8)


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ConfigError, match="uniform, first, last"):
        layer_pairs("middle", 12, 6)
    with pytest.raises(ConfigError, match="uniform, first, last"):
        init_layers("middle", 12, 6)
