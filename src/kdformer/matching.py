"""Layer maps: which teacher layer each student layer learns from, or is initialised from.

Two conventions, both tested against the published recipes:

* :func:`layer_pairs` pairs *outputs* for loss terms, 1-based as in ``hidden_states`` (0 is the
  embedding output). ``uniform`` is TinyBERT's ``g(m) = m * k``: the student's last layer learns
  from the teacher's last layer (12 -> 4 gives 3, 6, 9, 12). ``last_only`` is MiniLM's single
  pair (last student layer, last teacher layer).
* :func:`layer_groups` generalises it to many-to-one: with ``many_to_one`` each student layer
  learns from a window of ``window`` teacher layers centred on its ``uniform`` target (clipped
  to 1..teacher depth); the loss terms mix that window with learned softmax weights
  (:class:`kdformer.knowledge.layers.TeacherLayerMixer`). Every other strategy gives windows of
  one layer, so the terms treat both cases alike.
* :func:`init_layers` picks *teacher layers to copy* into the student, 0-based as in
  ``encoder.layer``. ``uniform`` is DistilBERT's every-k-th from the bottom (12 -> 6 gives
  0, 2, 4, 6, 8, 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

from kdformer.config.base import ConfigError
from kdformer.config.knowledge.layers import MatchStrategy

Strategy = Literal["uniform", "first", "last"]
LayerSpec = MatchStrategy | Sequence[Sequence[int]]
STRATEGIES: tuple[str, ...] = ("uniform", "first", "last")
"""Strategies for :func:`init_layers` (one teacher layer copied per student layer)."""
MATCH_STRATEGIES: tuple[str, ...] = ("uniform", "first", "last", "last_only", "many_to_one")
"""Strategies for the loss terms' ``layers`` field (:func:`layer_pairs`, :func:`layer_groups`)."""


class LayerGroup(NamedTuple):
    """A student layer and the teacher layers it learns from (1-based ``hidden_states`` indices).

    ``centre`` is the teacher layer a one-to-one map would use (the one favoured initially)."""

    student: int
    teachers: tuple[int, ...]
    centre: int


def _check_depths(teacher_layers: int, student_layers: int) -> None:
    if student_layers > teacher_layers:
        raise ConfigError(
            f"a one-to-one layer map needs student depth ({student_layers}) <= teacher depth "
            f"({teacher_layers}); give explicit `layers` pairs instead"
        )


def _unknown_strategy(spec: str) -> ConfigError:
    return ConfigError(
        f"unknown matching strategy '{spec}'; valid: {', '.join(MATCH_STRATEGIES)} or a list of "
        "[student, teacher] pairs"
    )


def _uniform_target(student_layer: int, teacher_layers: int, student_layers: int) -> int:
    return math.ceil(student_layer * teacher_layers / student_layers - 1e-9)


def layer_pairs(spec: LayerSpec, teacher_layers: int, student_layers: int) -> list[tuple[int, int]]:
    """(student_layer, teacher_layer) pairs, 1-based on ``hidden_states`` indices.

    One-to-one strategies only; ``many_to_one`` has windows, not pairs (see
    :func:`layer_groups`)."""
    if isinstance(spec, str):
        if spec == "last_only":
            return [(student_layers, teacher_layers)]
        if spec == "many_to_one":
            raise ConfigError(
                "many_to_one maps each student layer to a window of teacher layers, not a pair; "
                "use layer_groups()"
            )
        if spec not in STRATEGIES:
            raise _unknown_strategy(spec)
        _check_depths(teacher_layers, student_layers)
        students = range(1, student_layers + 1)
        if spec == "uniform":
            return [(s, _uniform_target(s, teacher_layers, student_layers)) for s in students]
        if spec == "first":
            return [(s, s) for s in students]
        return [(s, teacher_layers - student_layers + s) for s in students]
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


def layer_groups(
    spec: LayerSpec, teacher_layers: int, student_layers: int, window: int = 1
) -> list[LayerGroup]:
    """Each student layer with the teacher layers it learns from, 1-based.

    ``many_to_one``: the teacher layers ``c - window//2 .. c + window//2`` around the uniform
    target ``c`` (``window`` odd), dropping those outside ``1..teacher_layers`` (so edge windows
    are narrower). Any other spec: the one-to-one :func:`layer_pairs`, as windows of one."""
    if isinstance(spec, str) and spec == "many_to_one":
        if window < 1 or window % 2 == 0:
            raise ConfigError(
                f"many_to_one needs an odd window >= 1 (centred on the uniform target), not {window}"
            )
        groups = []
        for s in range(1, student_layers + 1):
            centre = _uniform_target(s, teacher_layers, student_layers)
            low, high = max(1, centre - window // 2), min(teacher_layers, centre + window // 2)
            groups.append(LayerGroup(s, tuple(range(low, high + 1)), centre))
        return groups
    return [LayerGroup(s, (t,), t) for s, t in layer_pairs(spec, teacher_layers, student_layers)]


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
