"""What the layer-based knowledge terms share: the ``layers``/``window`` config fields, the
learned many-to-one teacher-layer mixer, width projections and per-head reshaping."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from kdformer.config.base import ConfigError
from kdformer.config.knowledge.layers import LayerMatchedConfig, ProjectionMode
from kdformer.features import FeatureNeeds, Features, LayerModule
from kdformer.knowledge.base import ModelShape
from kdformer.matching import LayerGroup, layer_groups

CENTRE_PRIOR = 2.0
"""Initial mixer logit of a window's centre (others 0): with a window of 3 the centre starts at
weight e^2 / (e^2 + 2) = 0.79."""


def config_groups(
    config: LayerMatchedConfig, teacher: ModelShape, student: ModelShape
) -> list[LayerGroup]:
    """The layer groups a layer-matched term compares (its ``layers`` and ``window``)."""
    return layer_groups(config.layers, teacher.num_layers, student.num_layers, config.window)


class TeacherLayerMixer(nn.Module):
    """Learned softmax weights over each group's teacher layers (``many_to_one``).

    One row of logits per student layer, initialised to 0 except ``CENTRE_PRIOR`` at the uniform
    target. Groups of a single teacher layer (every one-to-one strategy, or ``window: 1``) need
    no weights and the mixer then has no parameters. The weights train with the student to
    lower the loss, so they may drift towards whichever teacher layer is easiest to imitate."""

    def __init__(self, groups: Sequence[LayerGroup]):
        super().__init__()
        self.groups = list(groups)
        widest = max((len(g.teachers) for g in self.groups), default=1)
        if widest == 1:
            self.register_parameter("logits", None)
            return
        logits = torch.zeros(len(self.groups), widest)
        for i, group in enumerate(self.groups):
            logits[i, group.teachers.index(group.centre)] = CENTRE_PRIOR
        self.logits = nn.Parameter(logits)

    def weights(self, index: int) -> torch.Tensor:
        """Softmax weights of group ``index``'s teacher layers (in ``teachers`` order)."""
        count = len(self.groups[index].teachers)
        if self.logits is None:
            return torch.ones(1)
        if count == 1:
            return self.logits.new_ones(1)
        return torch.softmax(self.logits[index, :count], dim=-1)

    def mix(self, index: int, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The weighted sum of one tensor per teacher layer of group ``index``. A mix of
        probability distributions is again a distribution."""
        if len(tensors) == 1:
            return tensors[0]
        weights = self.weights(index)
        return sum(w * x for w, x in zip(weights, tensors, strict=True))  # type: ignore[return-value]


class Projections(nn.ModuleList):
    """Learned linear maps from the student's width to the teacher's, one per layer or shared.

    Empty when no projection is needed (mode ``none``); ``project(i, x)`` applies layer i's."""

    def __init__(
        self, mode: ProjectionMode, count: int, student_width: int, teacher_width: int, what: str
    ):
        if mode == "auto":
            mode = "per_layer" if student_width != teacher_width else "none"
        if mode == "none" and student_width != teacher_width:
            raise ConfigError(
                f"{what} knowledge with projection 'none' needs equal widths, but the student is "
                f"{student_width} wide and the teacher {teacher_width}; use projection: auto"
            )
        sizes = {"per_layer": count, "shared": 1, "none": 0}[mode]
        super().__init__(nn.Linear(student_width, teacher_width) for _ in range(sizes))
        self.mode = mode

    def project(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        return self[index if self.mode == "per_layer" else 0](x)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, seq, heads * d) -> (batch, heads, seq, d), the layout attention uses."""
    b, s, w = x.shape
    if w % heads:
        raise ValueError(f"width {w} does not split into {heads} heads")
    return x.reshape(b, s, heads, w // heads).transpose(1, 2)


def scaled_dot(x: torch.Tensor, y: torch.Tensor, heads: int) -> torch.Tensor:
    """Per head ``X_h Y_h^T / sqrt(d_head)`` in float32, also under mixed-precision autocast:
    (batch, heads, seq, seq)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        xh, yh = split_heads(x.float(), heads), split_heads(y.float(), heads)
        return xh @ yh.transpose(-1, -2) / math.sqrt(xh.shape[-1])


def masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax over keys of (batch, heads, q, k) scores in float32; keys where the
    (batch, k) ``mask`` is 0 (padding) get probability 0. ``mask`` may instead be a boolean
    (batch, 1, q, k) key mask per query row (:func:`key_mask`, e.g. with a band)."""
    keys = mask[:, None, None, :].bool() if mask.dim() == 2 else mask
    scores = scores.float().masked_fill(~keys, torch.finfo(torch.float32).min)
    return torch.log_softmax(scores, dim=-1)


def regroup_heads(probs: torch.Tensor, heads: int) -> torch.Tensor:
    """Average groups of adjacent heads: (b, H, q, k) -> (b, heads, q, k); H must divide by heads.
    A mean of distributions is still a distribution, so KL stays well defined (the same averaging
    applies to pre-softmax scores)."""
    b, h, q, k = probs.shape
    return probs.reshape(b, heads, h // heads, q, k).mean(2)


def average_heads_log(log_probs: torch.Tensor) -> torch.Tensor:
    """log of the mean over heads of (b, H, q, k) distributions given in log space, exactly:
    (b, 1, q, k)."""
    return torch.logsumexp(log_probs, dim=1, keepdim=True) - math.log(log_probs.shape[1])


def distribution_kl(
    student_log_probs: torch.Tensor, teacher_probs: torch.Tensor, query_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student) per (head, query) row of (batch, heads, q, k) distributions,
    averaged over heads and real query rows. The student side is in log space (exact); the
    teacher side is probabilities, so teacher heads or layers can be mixed first. Keys the
    teacher gives probability 0 (padding) contribute nothing."""
    total = distribution_kl_sum(student_log_probs, teacher_probs, query_mask)
    return total / (query_mask.sum().clamp_min(1) * student_log_probs.shape[1])


def distribution_kl_sum(
    student_log_probs: torch.Tensor, teacher_probs: torch.Tensor, query_mask: torch.Tensor
) -> torch.Tensor:
    """The sum over heads and real query rows behind :func:`distribution_kl` (for query
    chunks, whose sums add up)."""
    log_t = teacher_probs.clamp_min(1e-12).log()
    rows = (teacher_probs * (log_t - student_log_probs)).sum(-1)  # (batch, heads, q)
    return (rows * query_mask.unsqueeze(1)).sum()


# --------------------------------------------------------------------------------------------
# Query chunks: bounded memory for seq x seq maps at long lengths
# --------------------------------------------------------------------------------------------

MAP_BUDGET = 2**24
"""Elements (float32: 64 MiB) of one (batch, heads, query rows, keys) map per query chunk. A
chunk holds a handful of such maps at once (scores, log-probabilities, each teacher layer's
probabilities, the product), so an attention or relation term needs a few hundred MiB at any
length, rather than the full maps' batch x heads x seq^2 (1.5 GiB per map at 4,096 tokens,
batch 2, 12 heads); backward recomputes one chunk at a time (activation checkpointing)."""


def query_chunk(batch: int, heads: int, rows: int, keys: int, chunk: int | None = None) -> int:
    """Query rows per chunk: ``chunk`` when set, else as many as fit :data:`MAP_BUDGET`."""
    if chunk is not None:
        return max(1, chunk)
    return max(1, min(rows, MAP_BUDGET // max(1, batch * heads * keys)))


def key_mask(mask: torch.Tensor, start: int, stop: int, band: int | None = None) -> torch.Tensor:
    """Boolean (batch, 1, rows, keys) mask of the keys each query row ``start..stop-1`` may
    attend to: real (unpadded) keys, and with ``band`` only those within ``band`` positions
    (a sliding window: Longformer's local attention)."""
    keys = mask[:, None, None, :].bool()
    if band is None:
        return keys.expand(-1, 1, stop - start, -1)
    rows = torch.arange(start, stop, device=mask.device)[:, None]
    cols = torch.arange(mask.shape[-1], device=mask.device)[None, :]
    return keys & ((rows - cols).abs() <= band)[None, None]


def chunked_sum(rows_sum, rows: int, chunk: int) -> torch.Tensor:
    """``rows_sum(start, stop)`` summed over query chunks. With more than one chunk under
    autograd, each chunk is checkpointed (its maps are rebuilt in backward), so memory holds one
    chunk's maps at a time; one chunk runs as plain code."""
    if chunk >= rows:
        return rows_sum(0, rows)
    total = None
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        if torch.is_grad_enabled():
            part = checkpoint(rows_sum, start, stop, use_reentrant=False)
        else:
            part = rows_sum(start, stop)
        total = part if total is None else total + part
    return total  # type: ignore[return-value]


def layer_module(features: Features, request: LayerModule, side: str) -> torch.Tensor:
    """The captured output of a per-layer module, with a clear error when it was not captured."""
    try:
        return features.layer_modules[request]
    except KeyError:
        raise KeyError(
            f"the {side} features lack the layer module {request}: extract them with the needs of "
            "the objective built for this teacher/student (objective.needs)"
        ) from None


def layer_module_needs(
    groups: Sequence[LayerGroup], side: str, kinds: Sequence[str]
) -> FeatureNeeds:
    """Per-layer module requests of one side: the student's layers, or every teacher layer of
    every group."""
    if side == "student":
        layers = {g.student for g in groups}
    else:
        layers = {t for g in groups for t in g.teachers}
    return FeatureNeeds(
        layer_modules=frozenset((kind, layer) for layer in layers for kind in kinds)
    )


def encoder_groups(groups: list[LayerGroup], what: str, lacks: str) -> list[LayerGroup]:
    """``groups`` unchanged, or a ConfigError if any names layer 0 (the embedding output)."""
    if any(g.student == 0 or 0 in g.teachers for g in groups):
        raise ConfigError(
            f"{what} knowledge compares encoder layers 1..N; layer 0 is the embedding output and "
            f"has no {lacks}"
        )
    return groups


def check_head_grouping(teacher_heads: int, student_heads: int, what: str) -> None:
    """ConfigError unless the teacher's heads regroup onto the student's (a multiple)."""
    if teacher_heads % student_heads != 0:
        raise ConfigError(
            f"{what} knowledge cannot match heads: the teacher has {teacher_heads} heads and the "
            f"student {student_heads}, and {teacher_heads} is not a multiple of {student_heads}. "
            f"Give the student a head count that divides {teacher_heads}, or set heads: average"
        )
