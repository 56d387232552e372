"""What every knowledge term shares: its config, the shapes it compares, and the registry.

A knowledge term is one loss between teacher and student features (logits, hidden states,
attention maps, ...). It is an ``nn.Module`` because some terms own trainable parts, such as
the projections that map a narrow student onto a wide teacher. Those parts train with the
student and are dropped when the student is saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from kdformer.config.base import ConfigError, import_path
from kdformer.config.knowledge import KNOWLEDGE_CONFIGS, KnowledgeTermConfig
from kdformer.families import find_family, intermediate_size_of
from kdformer.features import FeatureNeeds, Features, OutputSpec, teacher_key


@dataclass(frozen=True)
class ModelShape:
    """The sizes a loss term needs to know about a model."""

    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    num_labels: int
    summary: str = "first"
    """How one vector sums up a sequence: ``first`` token or ``mean`` of real tokens."""
    attention_windows: tuple[int, ...] | None = None
    """Banded attention (Longformer): per layer, how many keys each side a query sees."""

    @classmethod
    def of(cls, config: Any) -> ModelShape:
        """Read the shape from a transformers ``PretrainedConfig`` (through its family)."""
        family = find_family(config)
        return cls(
            num_layers=config.num_hidden_layers,
            hidden_size=int(config.hidden_size),
            num_heads=config.num_attention_heads,
            intermediate_size=intermediate_size_of(config),
            num_labels=getattr(config, "num_labels", 0),
            summary=family.summary_of(config) if family else "first",
            attention_windows=family.attention_windows(config)
            if family and family.attention_kind(config) == "banded"
            else None,
        )


class KnowledgeTerm(nn.Module):
    """One loss term. Subclasses validate their config against the shapes in ``__init__``
    (so mistakes surface before training) and compute the loss in ``forward`` from both
    models' features and the batch (attention mask, gold labels that mark positions).

    ``outputs``: the task outputs the models produce (what output-level terms compare).

    ``across_tokenizers``: how the term compares a student with its own vocabulary (see
    :mod:`kdformer.alignment`): ``units`` (token-level tensors moved onto the spans of text both
    tokenizations share), ``example`` (one vector per example, each model reading its own
    tokens) or ``refused`` (:meth:`cross_tokenizer_problem` says why)."""

    across_tokenizers: ClassVar[Literal["units", "example", "refused"]] = "units"
    refused_across_tokenizers: ClassVar[str] = ""

    def __init__(
        self,
        config: KnowledgeTermConfig,
        teacher: ModelShape,
        student: ModelShape,
        outputs: Sequence[OutputSpec] = (),
    ):
        super().__init__()
        self.config = config
        self.teacher_shape = teacher
        self.student_shape = student
        self.outputs = tuple(outputs)
        self.progress = 0.0  # training progress 0..1, set by DistillationObjective.set_progress

    @property
    def needs(self) -> FeatureNeeds:
        """What the forward passes must expose (both sides' needs together)."""
        return FeatureNeeds()

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        """What one side's forward pass must expose: ``needs`` unless overridden, as terms do
        whose per-layer modules differ between the sides (student layer 2, teacher layer 4)."""
        return self.needs

    def cross_tokenizer_problem(self) -> str | None:
        """Why this term cannot compare a student that has its own vocabulary with the
        teacher (None: it can)."""
        if self.across_tokenizers == "refused":
            return self.refused_across_tokenizers or "it compares token positions"
        return None

    def forward(
        self, student: Features, teacher: Features, batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        raise NotImplementedError


def build_term(
    config: KnowledgeTermConfig,
    teacher: ModelShape,
    student: ModelShape,
    outputs: Sequence[OutputSpec] = (),
) -> KnowledgeTerm:
    """Instantiate the registered term for ``config``."""
    name = getattr(config, "type", None)
    if KNOWLEDGE_CONFIGS.get(name) is not type(config):
        valid = ", ".join(sorted(KNOWLEDGE_CONFIGS))
        raise ConfigError(f"unknown knowledge type '{name}'; valid: {valid}")
    term_class = import_path(type(config).term)
    return term_class(config, teacher, student, outputs)


def scheduled(start: float, end: float | None, progress: float) -> float:
    """Linear interpolation from ``start`` (progress 0) to ``end`` (progress 1); ``start`` when
    there is no end."""
    if end is None:
        return start
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress


def token_mask(batch: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """(batch, seq) float mask of the batch's real tokens; all ones when it has no mask."""
    attention_mask = batch.get("attention_mask")
    if attention_mask is None:
        return torch.ones(like.shape[:2], dtype=like.dtype, device=like.device)
    return attention_mask.to(like.dtype)


def teacher_token_mask(batch: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """(batch, seq) float mask of the teacher's real tokens: its own attention mask when it
    reads other tokens than the student (``teacher_attention_mask``), else the batch's."""
    own = batch.get(teacher_key("attention_mask"))
    if own is None:
        return token_mask(batch, like)
    return own.to(like.dtype)
