"""Soft-logit knowledge (Hinton et al., 2015; DistilBERT): match the teacher's output
distribution, for whatever outputs the task distils (per example, per token, start/end)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from kdformer.config.base import ConfigError
from kdformer.config.knowledge.logits import LogitsConfig
from kdformer.features import FeatureNeeds, Features, OutputSpec
from kdformer.knowledge.base import (
    KnowledgeTerm,
    ModelShape,
    scheduled,
)


def kl_with_temperature(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2, averaged over rows (the last dimension is the
    distribution).

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    ``mask`` (same shape, bool): entries outside it (padded positions) get probability 0 on
    both sides and add nothing; they are filled after scaling by 1/T, so no T overflows them.
    """
    t = temperature
    student, teacher = student_logits.float() / t, teacher_logits.float() / t  # fp32 under autocast
    if mask is not None:
        low = torch.finfo(torch.float32).min
        student, teacher = student.masked_fill(~mask, low), teacher.masked_fill(~mask, low)
    teacher_log_probs = F.log_softmax(teacher, dim=-1)
    student_log_probs = F.log_softmax(student, dim=-1)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return kl.mean() * t * t


@dataclass
class TeacherMixture:
    """Several teachers' features for a soft-label term (``teacher: all``): each teacher's
    features, its fixed weight, and how each row's weights are set."""

    members: list[Features]
    weights: list[float]
    weighting: Literal["fixed", "confidence"] = "fixed"


def mixture_weights(
    teacher_rows: Sequence[torch.Tensor],
    fixed: Sequence[float],
    weighting: Literal["fixed", "confidence"] = "fixed",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(teachers, rows) weights that sum to 1 over the teachers in every row.

    ``fixed``: the fixed weights, normalised. ``confidence``: each fixed weight times that
    teacher's top probability on the row (at T=1; over the real positions for span outputs),
    normalised per row: a teacher sure of an example counts more on it. A single-output
    (regression) head has no probabilities and keeps the fixed weights."""
    first = teacher_rows[0]
    weights = torch.tensor(list(fixed), dtype=torch.float32, device=first.device)
    weights = weights.view(-1, *([1] * (first.dim() - 1))).expand(len(fixed), *first.shape[:-1])
    if weighting == "confidence" and first.shape[-1] > 1:
        confidence = []
        for rows in teacher_rows:
            rows = rows.float()
            if mask is not None:
                rows = rows.masked_fill(~mask, torch.finfo(torch.float32).min)
            confidence.append(rows.softmax(-1).max(-1).values)
        weights = weights * torch.stack(confidence)
    return weights / weights.sum(0, keepdim=True).clamp_min(1e-12)


def kl_to_mixture(
    student_logits: torch.Tensor,
    teacher_logits: Sequence[torch.Tensor],
    weights: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(sum_i w_i softmax(t_i / T) || softmax(s / T)) * T^2, averaged over rows: the student
    learns the teachers' weighted mix of soft labels. ``weights``: (teachers, rows) from
    :func:`mixture_weights`; ``mask`` as in :func:`kl_with_temperature`. One teacher with
    weight 1 gives :func:`kl_with_temperature`."""
    t = temperature
    low = torch.finfo(torch.float32).min
    student = student_logits.float() / t
    if mask is not None:
        student = student.masked_fill(~mask, low)
    mixed = torch.zeros_like(student)
    for weight, logits in zip(weights, teacher_logits):
        scaled = logits.float() / t
        if mask is not None:
            scaled = scaled.masked_fill(~mask, low)
        mixed = mixed + weight.unsqueeze(-1) * scaled.softmax(-1)
    kl = (torch.xlogy(mixed, mixed) - mixed * F.log_softmax(student, dim=-1)).sum(-1)
    return kl.mean() * t * t


def logits_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between raw logits (also the only sensible choice for regression)."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def row_mask(
    spec: OutputSpec, batch: Mapping[str, torch.Tensor], like: torch.Tensor
) -> torch.Tensor | None:
    """(batch, seq) bool mask of the token rows ``spec`` compares, or None for per-example rows.

    ``token``: real tokens (attention mask). ``labelled``: tokens whose gold label is not -100
    (falls back to real tokens when the batch carries no labels, e.g. in a plain loop). With
    ``spec.shift``, over the rows :meth:`OutputSpec.output_rows` keeps, by their targets."""
    if spec.over == "classes" and spec.rows == "example":
        return None
    attention = batch.get("attention_mask")
    real = (
        attention.bool()
        if attention is not None
        else torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    )
    if spec.over == "classes" and spec.rows == "labelled":
        labels = batch.get(spec.label_key) if spec.label_key else None
        if labels is not None:
            return spec.target_rows(labels != -100)
    return spec.target_rows(real)


def comparable_rows(
    spec: OutputSpec, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows of one output that are compared, each a distribution over its last dimension,
    and the mask of the entries that count: ``classes``: (rows, classes), only the masked
    token rows for token outputs, every entry counts (None); ``positions``: (batch, seq) and
    the real-token mask (padding excluded). Token rows follow ``spec.shift``."""
    mask = row_mask(spec, batch, logits)
    if spec.over == "positions":
        return logits, mask
    logits = spec.output_rows(logits)
    return (logits if mask is None else logits[mask]), None


def hard_label_loss(
    spec: OutputSpec, logits: torch.Tensor, labels: torch.Tensor, batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The ordinary supervised loss of one output on gold labels.

    ``classes``: cross-entropy ignoring label -100 (token tasks mark unlabelled pieces so;
    augmented examples have no gold label), or MSE for a single-output (regression) head,
    ignoring NaN labels; token rows pair with the labels ``spec.shift`` positions later.
    ``positions``: cross-entropy over the real positions (padding excluded) against the gold
    position. Zero when the batch holds no usable label."""
    if spec.over == "positions":
        rows, mask = comparable_rows(spec, logits, batch)
        rows = rows.float().masked_fill(~mask, torch.finfo(torch.float32).min)
        return F.cross_entropy(rows, labels.long())
    logits, labels = spec.output_rows(logits), spec.target_rows(labels)
    if logits.shape[-1] == 1:
        values, targets = logits.reshape(-1).float(), labels.reshape(-1).float()
        keep = ~torch.isnan(targets)
        if not keep.any():
            return values.sum() * 0.0
        return F.mse_loss(values[keep], targets[keep])
    flat = labels.reshape(-1).long()
    if not (flat != -100).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100)


class LogitsKnowledge(KnowledgeTerm):
    """Soft logits: KL at temperature T (times T^2) or MSE between the task's output logits.

    Takes every output the task distils from both models (Hinton et al.; DistilBERT), so
    widths and head counts do not matter; the label sets must be equal. Per example
    (classification), per token (NER: only the labelled tokens, i.e. the first word piece of
    each word, the positions that make predictions; masked LM: the masked tokens), or over
    positions (extractive QA: the start and end distributions over the real tokens); the
    outputs' losses are averaged. T can follow a linear schedule over training (temperature ->
    temperature_end). Single-output (regression) heads always use MSE, since a KL over one
    class is identically zero."""

    config: LogitsConfig

    def __init__(
        self,
        config: LogitsConfig,
        teacher: ModelShape,
        student: ModelShape,
        outputs: Sequence[OutputSpec] = (),
    ):
        super().__init__(config, teacher, student, outputs)
        if not outputs:
            raise ConfigError(
                "logits knowledge needs model outputs to compare, and this task distils none "
                "(raw text with a teacher that has no MLM head). Use hidden, attention or "
                "qkv_relations knowledge, or a teacher with an MLM head"
            )

    @property
    def needs(self) -> FeatureNeeds:
        return FeatureNeeds(outputs=frozenset(o.name for o in self.outputs))

    def cross_tokenizer_problem(self) -> str | None:
        """Per-example outputs, per-word outputs (NER) and distributions over positions (QA)
        align across tokenizers; a language model's outputs are distributions over each
        model's own vocabulary and do not."""
        for spec in self.outputs:
            if spec.over == "classes" and (spec.rows == "token" or spec.shift):
                return (
                    f"the {spec.name} output is a distribution over each model's own vocabulary "
                    "(a language model's predictions), and the vocabularies differ"
                )
        return None

    @property
    def temperature(self) -> float:
        """The temperature at the current training progress."""
        end = self.config.temperature_end if self.config.temperature_schedule == "linear" else None
        return scheduled(self.config.temperature, end, self.progress)

    def forward(
        self,
        student: Features,
        teacher: Features | TeacherMixture,
        batch: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        if isinstance(teacher, TeacherMixture):
            return self.mixture_loss(student, teacher, batch)
        losses = []
        for spec in self.outputs:
            s, t = student.outputs[spec.name], teacher.outputs[spec.name]
            if s.shape != t.shape:
                raise ValueError(
                    f"student {spec.name} {tuple(s.shape)} != teacher {spec.name} {tuple(t.shape)}"
                )
            if spec.over == "positions" and self.config.loss == "mse":
                mask = row_mask(spec, batch, s)
                losses.append(logits_mse(s[mask], t[mask]))
                continue
            (s, mask), (t, _) = comparable_rows(spec, s, batch), comparable_rows(spec, t, batch)
            if s.shape[0] == 0:  # no labelled token in this batch
                losses.append(s.sum() * 0.0)
            elif self.config.loss == "mse" or s.shape[-1] == 1:
                losses.append(logits_mse(s, t))
            else:
                losses.append(kl_with_temperature(s, t, self.temperature, mask))
        return torch.stack(losses).mean()

    def mixture_loss(
        self, student: Features, mixture: TeacherMixture, batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The loss against several teachers: KL to their weighted mix of soft labels, or MSE to
        their weighted mean logits (mse loss, regression)."""
        losses = []
        for spec in self.outputs:
            s, mask = comparable_rows(spec, student.outputs[spec.name], batch)
            rows = [comparable_rows(spec, m.outputs[spec.name], batch)[0] for m in mixture.members]
            for t in rows:
                if t.shape != s.shape:
                    raise ValueError(
                        f"student {spec.name} {tuple(s.shape)} != teacher {tuple(t.shape)}"
                    )
            if s.shape[0] == 0:
                losses.append(s.sum() * 0.0)
                continue
            weights = mixture_weights(rows, mixture.weights, mixture.weighting, mask)
            if self.config.loss == "mse" or s.shape[-1] == 1:
                target = sum(w.unsqueeze(-1) * t.float() for w, t in zip(weights, rows))
                if mask is not None:
                    s, target = s[mask], target[mask]
                losses.append(logits_mse(s, target))
            else:
                losses.append(kl_to_mixture(s, rows, weights, self.temperature, mask))
        return torch.stack(losses).mean()
