"""The distillation objective: weighted knowledge terms plus the ordinary hard-label loss.

Usable from a plain PyTorch loop::

    objective = DistillationObjective(cfg.knowledge, teacher.config, student.config,
                                      outputs=task.outputs, hard_label_weight=0.5)
    teacher_signal = LiveTeacher(teacher, objective.needs_for("teacher"))  # frozen, no_grad
    prepare_model(student, objective.needs_for("student"))  # checks the hooked modules exist
    for step, batch in enumerate(loader):
        objective.set_progress(step / total_steps)     # only matters for scheduled terms
        student_features = extract_features(student, batch, objective.needs_for("student"))
        out = objective(student_features, teacher_signal(batch), batch)
        out.loss.backward()   # out.terms holds every term by name, for logging

``outputs`` says which model outputs the task distils and where their gold labels are
(:class:`kdformer.features.OutputSpec`; every task lists its own as ``task.outputs``). The batch
carries the attention mask and the gold labels. ``objective.needs`` (both sides' needs
together) also works for either model: per-layer module requests for layers a model does not
have are skipped. Put ``objective.parameters()`` in the optimiser too: projections and
many-to-one layer weights train with the student.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from kdformer.alignment import UnitAlignment
from kdformer.config.base import ConfigError
from kdformer.config.knowledge import KnowledgeTermConfig
from kdformer.families import family_of, find_family
from kdformer.features import FeatureNeeds, Features, OutputSpec
from kdformer.knowledge import KnowledgeTerm, ModelShape, build_term
from kdformer.knowledge.base import scheduled
from kdformer.knowledge.logits import TeacherMixture, hard_label_loss

MAIN = "main"
"""The id of the teacher the student is shaped and initialised from."""
ALL, EACH = "all", "each"


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # unweighted value of each term, detached


def term_names(configs: Sequence[KnowledgeTermConfig]) -> list[str]:
    """Unique log names: the type, suffixed with its position when a type repeats."""
    types = [getattr(c, "type", "term") for c in configs]
    return [t if types.count(t) == 1 else f"{t}_{i}" for i, t in enumerate(types)]


def term_teachers(config: KnowledgeTermConfig, teachers: Sequence[str]) -> list[str]:
    """The teachers one knowledge term learns from: a list of ids, or ``[ALL]`` for the
    mix of every teacher's soft labels."""
    kind = getattr(config, "type", "term")
    chosen = config.teacher or (ALL if kind == "logits" else MAIN)
    if chosen == EACH:
        return list(teachers)
    if chosen == ALL:
        if kind != "logits":
            raise ConfigError(
                f"teacher: all mixes soft labels, which only logits knowledge has; give the "
                f"{kind} term one teacher ({', '.join(teachers)}) or each"
            )
        return [ALL] if len(teachers) > 1 else [MAIN]
    if chosen not in teachers:
        raise ConfigError(
            f"the {kind} knowledge term names teacher '{chosen}', which is not one of the "
            f"teachers ({', '.join(teachers)}; more go in distill.teachers with an id), each or all"
        )
    return [chosen]


def check_knowledge_supported(
    knowledge: Sequence[KnowledgeTermConfig], teacher_config: Any, student_config: Any
) -> None:
    """ConfigError, before training, when either model's family cannot supply a requested
    knowledge type (it names the family and the types it supports). Models of no declared
    family can still give the terms that read only outputs and hidden states (logits, hidden,
    embedding, sentence vectors: ``model_agnostic``)."""
    types = [str(getattr(c, "type", "")) for c in knowledge]
    for config, role in ((teacher_config, "teacher"), (student_config, "student")):
        family = find_family(config)
        if family is not None:
            family.check_knowledge(config, types, role)
            continue
        needs_layout = sorted(
            {str(getattr(c, "type", "")) for c in knowledge if not type(c).model_agnostic}
        )
        if needs_layout:
            family_of(config)  # the error lists the declared families


class DistillationObjective(nn.Module):
    """Holds the knowledge terms (and their trainable projections and layer mixers) and
    combines them with the hard-label loss of every task output that has gold labels.

    ``hard_label_weight_end``, when set, moves the hard-label weight linearly from
    ``hard_label_weight`` (progress 0) to it (progress 1); :meth:`set_progress` sets the training
    progress that this and scheduled terms (e.g. the logits temperature) read.

    Several teachers: ``other_teachers`` maps more teachers' ids to their configs (the main
    one is ``main``); each term learns from the teacher(s) its ``teacher:`` names, with
    projections of that teacher's width (``each``: one term per teacher, named ``type@id``).
    Soft labels default to the mix of all teachers, weighted by ``teacher_weights`` (fixed) or
    also by each teacher's confidence per row (``weighting: confidence``). :meth:`forward` then
    takes a mapping of teacher id to features.

    ``cross_tokenizer``: the student has its own vocabulary (:mod:`kdformer.alignment`): terms
    that cannot be aligned are refused here, with the reason; batches that carry unit maps are
    then compared on units, term by term."""

    def __init__(
        self,
        knowledge: Sequence[KnowledgeTermConfig],
        teacher_config: Any,
        student_config: Any,
        outputs: Sequence[OutputSpec],
        hard_label_weight: float = 0.0,
        hard_label_weight_end: float | None = None,
        other_teachers: Mapping[str, Any] | None = None,
        teacher_weights: Mapping[str, float] | None = None,
        weighting: Literal["fixed", "confidence"] = "fixed",
        cross_tokenizer: bool = False,
    ):
        super().__init__()
        configs = {MAIN: teacher_config, **(other_teachers or {})}
        self.teacher_ids = list(configs)
        self.mixture_weights = [float((teacher_weights or {}).get(i, 1.0)) for i in configs]
        self.weighting = weighting
        plan = []  # (name, config, teacher id or ALL)
        for name, cfg in zip(term_names(knowledge), knowledge):
            targets = term_teachers(cfg, self.teacher_ids)
            for target in targets:
                plan.append((name if len(targets) == 1 else f"{name}@{target}", cfg, target))
        for teacher_id, config in configs.items():
            used = [c for _, c, t in plan if t in (teacher_id, ALL)]
            check_knowledge_supported(used, config, student_config)
        student = ModelShape.of(student_config)
        self.outputs = tuple(outputs)
        self.targets = {name: target for name, _, target in plan}
        self.terms = nn.ModuleDict(
            {
                name: build_term(
                    cfg, ModelShape.of(configs[MAIN if t == ALL else t]), student, self.outputs
                )
                for name, cfg, t in plan
            }
        )
        self.names = list(self.terms)
        self.cross_tokenizer = cross_tokenizer
        if cross_tokenizer:
            check_across_tokenizers(self.terms)
        self.hard_label_weight = hard_label_weight
        self.hard_label_weight_end = hard_label_weight_end
        self.progress = 0.0
        if not len(self.terms) and not self.uses_hard_labels:
            raise ConfigError(
                "the distillation objective is empty: no knowledge terms and no hard-label loss "
                "(hard_label_weight is 0, or the task has no gold labels). Add a knowledge type "
                "to distill.knowledge (see `kdformer knowledge`) or set distill.hard_label_weight"
            )

    def set_progress(self, fraction: float) -> None:
        """Training progress, 0 at the start and 1 at the end (clipped), for scheduled values.
        ``ProgressCallback`` calls it at every step of a ``DistillationTrainer`` run."""
        self.progress = min(max(float(fraction), 0.0), 1.0)
        for term in self.terms.values():
            term.progress = self.progress

    @property
    def current_hard_label_weight(self) -> float:
        """The hard-label weight at the current progress."""
        return scheduled(self.hard_label_weight, self.hard_label_weight_end, self.progress)

    @property
    def uses_hard_labels(self) -> bool:
        """Whether gold labels enter the loss at any point of training."""
        weight = max(self.hard_label_weight, self.hard_label_weight_end or 0)
        return weight > 0 and any(o.label_key for o in self.outputs)

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        """What one model's forward pass must expose (per-layer modules differ by side); for
        the teacher side, the main teacher's."""
        if side == "teacher":
            return self.needs_of_teacher(MAIN)
        needs = FeatureNeeds()
        if self.uses_hard_labels:
            needs = FeatureNeeds(outputs=frozenset(o.name for o in self.outputs if o.label_key))
        for term in self.terms.values():
            needs = needs | term.needs_for(side)
        return needs

    def needs_of_teacher(self, teacher_id: str) -> FeatureNeeds:
        """What one teacher's forward pass must expose: the needs of the terms that learn from
        it (the soft-label mix learns from every teacher)."""
        needs = FeatureNeeds()
        for name, term in self.terms.items():
            if self.targets[name] in (teacher_id, ALL):
                needs = needs | term.needs_for("teacher")
        return needs

    def teacher_features(
        self, teacher: Features | Mapping[str, Features], name: str
    ) -> Features | TeacherMixture:
        """What one term compares with: its teacher's features, or the mix of all."""
        if isinstance(teacher, Features):
            return teacher
        target = self.targets[name]
        if target == ALL:
            members = [teacher[i] for i in self.teacher_ids]
            return TeacherMixture(members, self.mixture_weights, self.weighting)
        return teacher[target]

    @property
    def needs(self) -> FeatureNeeds:
        """Both sides' needs together; safe to pass for either model."""
        return self.needs_for("student") | self.needs_for("teacher")

    def hard_loss(
        self, student: Features, batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Mean supervised loss over the outputs whose gold labels the batch carries."""
        losses = [
            hard_label_loss(spec, student.outputs[spec.name], batch[spec.label_key], batch)
            for spec in self.outputs
            if spec.label_key and spec.label_key in batch
        ]
        return torch.stack(losses).mean() if losses else None

    def forward(
        self,
        student: Features,
        teacher: Features | Mapping[str, Features] | None,
        batch: Mapping[str, torch.Tensor],
    ) -> ObjectiveOutput:
        """``teacher``: the one teacher's features, or every teacher's by id."""
        if teacher is None and len(self.terms):
            raise ValueError("teacher features are needed: the objective has knowledge terms")
        weighted: list[torch.Tensor] = []
        values: dict[str, torch.Tensor] = {}
        alignment = UnitAlignment.of(batch)
        for name, term in self.terms.items():
            if alignment is None:
                value = term(student, self.teacher_features(teacher, name), batch)
            else:
                value = term(
                    *aligned(term, alignment, student, self.teacher_features(teacher, name))
                )
            values[name] = value.detach()
            weighted.append(term.config.weight * value)
        if self.uses_hard_labels:
            value = self.hard_loss(student, batch)
            if value is not None:
                values["hard_label"] = value.detach()
                weighted.append(self.current_hard_label_weight * value)
        if not weighted:
            raise ValueError(
                f"nothing to compute: no knowledge terms, and the batch holds none of the gold "
                f"labels {[o.label_key for o in self.outputs if o.label_key]}"
            )
        return ObjectiveOutput(loss=torch.stack(weighted).sum(), terms=values)


def check_across_tokenizers(terms: Mapping[str, KnowledgeTerm]) -> None:
    """ConfigError, before training, naming every knowledge term that cannot compare a student
    with its own vocabulary, and why."""
    problems = [
        f"{name}: {problem}"
        for name, term in terms.items()
        if (problem := term.cross_tokenizer_problem()) is not None
    ]
    if problems:
        raise ConfigError(
            "the student has its own vocabulary (student.vocabulary), so teacher and student "
            "read the text as different tokens, and some knowledge cannot be aligned: "
            + "; ".join(problems)
            + ". Drop these terms, or leave student.vocabulary unset (the teacher's tokenizer)"
        )


def aligned(
    term: KnowledgeTerm,
    alignment: UnitAlignment,
    student: Features,
    teacher: Features | TeacherMixture,
) -> tuple[Features, Features | TeacherMixture, Mapping[str, torch.Tensor]]:
    """A term's inputs on a cross-tokenised batch: per-example terms take both models'
    features as they are (each read its own tokens); token-level terms take them moved onto
    the units both tokenizations share, with the batch that marks those units."""
    problem = term.cross_tokenizer_problem()
    if problem is not None:
        raise ConfigError(f"{type(term).__name__} cannot compare across tokenizers: {problem}")
    if term.across_tokenizers == "example":
        return student, teacher, alignment.batch
    outputs = term.outputs
    if isinstance(teacher, TeacherMixture):
        moved: Features | TeacherMixture = TeacherMixture(
            [alignment.features(m, "teacher", outputs) for m in teacher.members],
            teacher.weights,
            teacher.weighting,
        )
    else:
        moved = alignment.features(teacher, "teacher", outputs)
    return alignment.features(student, "student", outputs), moved, alignment.batch_for(outputs)
