"""Layer maps: which teacher layer each student layer learns from, or is initialised from.

Two conventions, both 1-to-1 and both tested against the published recipes:

* :func:`layer_pairs` pairs *outputs* for loss terms, 1-based as in ``hidden_states`` (0 is the
  embedding output). ``uniform`` is TinyBERT's ``g(m) = m * k``: the student's last layer learns
  from the teacher's last layer (12 -> 4 gives 3, 6, 9, 12).
* :func:`init_layers` picks *teacher layers to copy* into the student, 0-based as in
  ``encoder.layer``. ``uniform`` is DistilBERT's every-k-th from the bottom (12 -> 6 gives
  0, 2, 4, 6, 8, 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from kdformer.configbase import ConfigError

Strategy = Literal["uniform", "first", "last"]
LayerSpec = Strategy | Sequence[Sequence[int]]
STRATEGIES: tuple[str, ...] = ("uniform", "first", "last")


def _check_depths(teacher_layers: int, student_layers: int) -> None:
    if student_layers > teacher_layers:
        raise ConfigError(
            f"a one-to-one layer map needs student depth ({student_layers}) <= teacher depth "
            f"({teacher_layers}); give explicit `layers` pairs instead"
        )


def layer_pairs(spec: LayerSpec, teacher_layers: int, student_layers: int) -> list[tuple[int, int]]:
    """(student_layer, teacher_layer) pairs, 1-based on ``hidden_states`` indices."""
    if isinstance(spec, str):
        _check_depths(teacher_layers, student_layers)
        students = range(1, student_layers + 1)
        if spec == "uniform":
            return [(s, math.ceil(s * teacher_layers / student_layers - 1e-9)) for s in students]
        if spec == "first":
            return [(s, s) for s in students]
        if spec == "last":
            return [(s, teacher_layers - student_layers + s) for s in students]
        raise ConfigError(f"unknown matching strategy '{spec}'; valid: {', '.join(STRATEGIES)}")
    pairs = [tuple(p) for p in spec]
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError(f"layer pair {list(pair)} must be [student_layer, teacher_layer]")
        s, t = pair
        if not 1 <= s <= student_layers:
            raise ConfigError(
                f"student layer {s} in pair {list(pair)} is out of range: the student has "
                f"{student_layers} layers (valid 1..{student_layers}; 0 is the embedding output)"
            )
        if not 1 <= t <= teacher_layers:
            raise ConfigError(
                f"teacher layer {t} in pair {list(pair)} is out of range: the teacher has "
                f"{teacher_layers} layers (valid 1..{teacher_layers}; 0 is the embedding output)"
            )
    return [(int(s), int(t)) for s, t in pairs]


def init_layers(
    spec: Strategy | Sequence[int], teacher_layers: int, student_layers: int
) -> list[int]:
    """0-based teacher layer indices whose weights initialise student layers 0..n-1."""
    if isinstance(spec, str):
        _check_depths(teacher_layers, student_layers)
        if spec == "uniform":
            return [math.floor(i * teacher_layers / student_layers) for i in range(student_layers)]
        if spec == "first":
            return list(range(student_layers))
        if spec == "last":
            return list(range(teacher_layers - student_layers, teacher_layers))
        raise ConfigError(f"unknown init_layers '{spec}'; valid: {', '.join(STRATEGIES)} or a list")
    layers = [int(i) for i in spec]
    if len(layers) != student_layers:
        raise ConfigError(
            f"init_layers lists {len(layers)} teacher layers but the student has {student_layers}"
        )
    bad = [i for i in layers if not 0 <= i < teacher_layers]
    if bad:
        raise ConfigError(
            f"init_layers {bad} out of range: the teacher has {teacher_layers} layers "
            f"(valid 0..{teacher_layers - 1})"
        )
    return layers
