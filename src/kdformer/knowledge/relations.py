"""Self-attention relation knowledge (MiniLM, MiniLMv2): distributions built from the query,
key and value vectors of a layer, compared with KL(teacher || student).

The vectors come from forward hooks on each layer's ``query``/``key``/``value`` projections
(``FeatureNeeds.layer_modules``), so no attention maps, eager attention or model edits are
needed.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from kdformer.config.base import ConfigError
from kdformer.config.knowledge.relations import QKVRelationsConfig, ValueRelationConfig
from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge.base import KnowledgeTerm, ModelShape, token_mask
from kdformer.knowledge.layers import (
    TeacherLayerMixer,
    average_heads_log,
    check_head_grouping,
    chunked_sum,
    config_groups,
    distribution_kl,
    distribution_kl_sum,
    encoder_groups,
    key_mask,
    layer_module,
    layer_module_needs,
    masked_log_softmax,
    query_chunk,
    regroup_heads,
    scaled_dot,
)

RELATION_MODULES = {"qq": "query", "kk": "key", "vv": "value"}


def relation_log_probs(x: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(X_h X_h^T / sqrt(d_h)) per head over real keys: (batch, seq, width) ->
    (batch, heads, seq, seq) float32; padded keys get probability 0."""
    return masked_log_softmax(scaled_dot(x, x, heads), mask)


relation_kl = distribution_kl
"""KL(teacher || student) of (batch, heads, q, k) relations: see
:func:`kdformer.knowledge.layers.distribution_kl`."""


# --------------------------------------------------------------------------------------------
# MiniLM v1: value relation
# --------------------------------------------------------------------------------------------


class ValueRelationKnowledge(KnowledgeTerm):
    """Value relation (MiniLM): softmax(V_h V_h^T / sqrt(d_head)) per head, KL teacher || student.

    Takes each matched layer's value projection output (forward hooks, per model attention
    head). KL per head and real query row, padded keys masked out, averaged over heads, rows and
    layers; MiniLM pairs it with the attention KL (type: attention) on the last layer only, the
    default here. Widths do not matter (relations are seq x seq), but the relations follow the
    models' own heads: equal head counts, or a teacher with k times the student's heads whose
    groups of k adjacent heads' relations are averaged (heads: match), or head-averaged relations
    for any counts (heads: average); anything else is a ConfigError when the term is built."""

    config: ValueRelationConfig

    def __init__(
        self, config: ValueRelationConfig, teacher: ModelShape, student: ModelShape, outputs=()
    ):
        super().__init__(config, teacher, student, outputs)
        self.groups = encoder_groups(
            config_groups(config, teacher, student), "value_relation", "values"
        )
        self.mixer = TeacherLayerMixer(self.groups)
        if config.heads == "match":
            check_head_grouping(teacher.num_heads, student.num_heads, "value_relation")

    @property
    def needs(self) -> FeatureNeeds:
        return self.needs_for("student") | self.needs_for("teacher")

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        return layer_module_needs(self.groups, side, ["value"])

    def forward(self, student: Features, teacher: Features, batch) -> torch.Tensor:
        sh, th = self.student_shape.num_heads, self.teacher_shape.num_heads
        average = self.config.heads == "average"
        heads = 1 if average else sh
        losses = []
        for i, group in enumerate(self.groups):
            values = layer_module(student, ("value", group.student), "student")
            targets = [layer_module(teacher, ("value", t), "teacher") for t in group.teachers]
            mask = token_mask(batch, values)
            total = relation_kl_chunked(
                values, sh, targets, th, heads, average, mask, self.mixer, i,
                self.config.query_chunk,
            )  # fmt: skip
            losses.append(total / (mask.sum().clamp_min(1) * heads))
        return torch.stack(losses).mean()


def relation_kl_chunked(
    student: torch.Tensor,
    student_heads: int,
    teachers: list[torch.Tensor],
    teacher_heads: int,
    heads: int,
    average: bool,
    mask: torch.Tensor,
    mixer: TeacherLayerMixer,
    group: int,
    chunk: int | None,
) -> torch.Tensor:
    """Sum over heads and real query rows of KL(teacher || student) between the relations
    softmax(X_h X_h^T / sqrt(d_h)) of (batch, seq, width) vectors, built in query chunks (see
    :func:`kdformer.knowledge.layers.chunked_sum`); teacher relations regrouped onto ``heads``
    and mixed over the group's teacher layers."""

    def rows_sum(start: int, stop: int) -> torch.Tensor:
        keys = key_mask(mask, start, stop)
        s_log = masked_log_softmax(scaled_dot(student[:, start:stop], student, student_heads), keys)
        if average:  # log of the mean of the heads' distributions
            s_log = average_heads_log(s_log)
        targets = [
            regroup_heads(
                masked_log_softmax(scaled_dot(t[:, start:stop], t, teacher_heads), keys).exp(),
                heads,
            )
            for t in teachers
        ]
        return distribution_kl_sum(s_log, mixer.mix(group, targets), mask[:, start:stop])

    length = student.shape[1]
    size = query_chunk(
        mask.shape[0], max(student_heads, teacher_heads) * len(teachers), length, length, chunk
    )
    return chunked_sum(rows_sum, length, size)


# --------------------------------------------------------------------------------------------
# MiniLMv2: multi-head self-attention relations
# --------------------------------------------------------------------------------------------


def common_divisors_near(a: int, b: int, wanted: int, count: int = 3) -> list[int]:
    """The ``count`` numbers dividing both ``a`` and ``b`` closest to ``wanted`` (ascending)."""
    g = math.gcd(a, b)
    divisors = [d for d in range(1, g + 1) if g % d == 0]
    return sorted(sorted(divisors, key=lambda d: (abs(d - wanted), d))[:count])


class QKVRelationsKnowledge(KnowledgeTerm):
    """Self-attention relations (MiniLMv2): Q-Q, K-K and V-V relations with their own heads.

    Takes each matched layer's query/key/value projection outputs (forward hooks): the vectors of
    all attention heads concatenated, split again into ``relation_heads`` relation heads of
    width/relation_heads each; per relation head softmax(X_r X_r^T / sqrt(d_r)) over real keys,
    KL(teacher || student) averaged over relation heads and real query rows, summed over the
    chosen relations and averaged over layers (last layer only by default, as MiniLMv2). Neither
    the models' attention head counts nor their widths matter and no projection is needed, only
    relation_heads must divide both widths (else a ConfigError naming them)."""

    config: QKVRelationsConfig

    def __init__(
        self, config: QKVRelationsConfig, teacher: ModelShape, student: ModelShape, outputs=()
    ):
        super().__init__(config, teacher, student, outputs)
        self.groups = encoder_groups(
            config_groups(config, teacher, student), "qkv_relations", "query/key/value"
        )
        self.mixer = TeacherLayerMixer(self.groups)
        r = config.relation_heads
        bad = [
            f"the {who} width ({width})"
            for who, width in (("teacher", teacher.hidden_size), ("student", student.hidden_size))
            if width % r
        ]
        if bad:
            raise ConfigError(
                f"qkv_relations: relation_heads {r} must divide both the teacher width "
                f"({teacher.hidden_size}) and the student width ({student.hidden_size}); it does "
                f"not divide {' or '.join(bad)}. Choose a common divisor: "
                + ", ".join(
                    str(d)
                    for d in common_divisors_near(teacher.hidden_size, student.hidden_size, r)
                )
            )

    @property
    def needs(self) -> FeatureNeeds:
        return self.needs_for("student") | self.needs_for("teacher")

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        kinds = [RELATION_MODULES[r] for r in self.config.relations]
        return layer_module_needs(self.groups, side, kinds)

    def forward(self, student: Features, teacher: Features, batch) -> torch.Tensor:
        heads = self.config.relation_heads
        losses = []
        for i, group in enumerate(self.groups):
            total = None
            for relation in self.config.relations:
                kind = RELATION_MODULES[relation]
                vectors = layer_module(student, (kind, group.student), "student")
                targets = [layer_module(teacher, (kind, t), "teacher") for t in group.teachers]
                mask = token_mask(batch, vectors)
                kl = relation_kl_chunked(
                    vectors, heads, targets, heads, heads, False, mask, self.mixer, i,
                    self.config.query_chunk,
                ) / (mask.sum().clamp_min(1) * heads)  # fmt: skip
                total = kl if total is None else total + kl
            losses.append(total)
        return torch.stack(losses).mean()
