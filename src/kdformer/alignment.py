"""Cross-tokenizer alignment: a student with its own vocabulary reads the same text as the
teacher through other tokens, and token-level knowledge is compared on spans of text both
tokenizations share.

**Maps** (built once, when the data are tokenised, from the fast tokenizers' character
offsets). Every token of either side belongs to at most one *unit*: the smallest span of text
on which both tokenizations cut. With two vocabularies a unit is usually a word ("unbelievable"
as ``un ##believ ##able`` and ``unbel ##ievable``), or a piece both sides share; with one
tokenizer every token is a unit of its own, so every aligned comparison reduces to the
ordinary token-by-token one. Special tokens pair by order ([CLS] with [CLS], the first with the
first when their numbers differ). A unit one side lacks (text truncated away on that side) is
no unit. The batch carries the maps as ``student_units`` and ``teacher_units``: per token the
index of its unit, -1 for none (padding, a token of no text).

**Applying** (per batch and knowledge term, :class:`UnitAlignment`): token-level tensors of
either model become unit-level ones. Hidden states, embedding outputs, Q/K/V vectors and
feed-forward activations: the mean over each unit's tokens (so relations are computed between
words); per-token logits (NER): each unit's first piece, compared where both first pieces are
labelled (each word's first piece); distributions over positions (QA's start and end): the
probability mass of each unit's tokens (log-sum-exp of their logits), one distribution over
units per side. The attention mask of the aligned batch marks the units both sides have.
Per-example outputs (classification logits, sentence vectors) need no alignment: each model
reads its own tokens (the teacher's mask is ``teacher_attention_mask``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch

from kdformer.config.base import ConfigError
from kdformer.features import MODEL_INPUTS, Features, OutputSpec, teacher_key

STUDENT_UNITS = "student_units"
"""The batch key of the student's unit map: (batch, student length) unit index, -1 for none."""
TEACHER_UNITS = "teacher_units"
"""The batch key of the teacher's unit map: (batch, teacher length) unit index, -1 for none."""
UNIT_KEYS = (STUDENT_UNITS, TEACHER_UNITS)
TEACHER_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")
"""What the teacher reads from a batch of cross-tokenised features (under :func:`teacher_key`)."""

Policy = Literal["units", "example", "refused"]
"""How a knowledge term crosses tokenizers: on units, per example (each model's own tokens), or
not at all."""

SPECIAL = -1
"""The segment of a special token in a :data:`Span`."""
Span = tuple[int, int, int]
"""(segment, start, end) of one token: which text of the input (0, or 1 for a pair's second)
and its characters there, whitespace trimmed; (SPECIAL, 0, 0) for a special token."""


# --------------------------------------------------------------------------------------------
# Maps (no torch): character spans -> units
# --------------------------------------------------------------------------------------------


def trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``start, end`` without the whitespace at either end of ``text[start:end]`` (byte-level
    and Metaspace tokens may count the space before a word as theirs)."""
    end = min(end, len(text))
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def offset_spans(
    segments: Sequence[int | None],
    offsets: Sequence[Sequence[int]],
    texts: Sequence[str],
    shifts: Sequence[int] | None = None,
) -> list[Span | None]:
    """The :data:`Span` of every token from its segment (a fast tokenizer's sequence id: None
    for a special token) and offsets: ``texts`` are the texts by segment (the text, and a
    pair's second text); ``shifts`` what to add to each segment's offsets (a window cut out of
    a longer text). None for a token that covers no text."""
    shifts = list(shifts) if shifts is not None else [0] * len(texts)
    spans: list[Span | None] = []
    for segment, (start, end) in zip(segments, offsets):
        if segment is None:
            spans.append((SPECIAL, 0, 0))
            continue
        text, shift = texts[segment], shifts[segment]
        start, end = start + shift, min(end + shift, len(text))
        while start < end and text[start].isspace():  # (trimmed, inline: a hot loop)
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        spans.append((segment, start, end) if end > start else None)
    return spans


def encoding_spans(
    encoding: Any, row: int, texts: Sequence[str], shifts: Sequence[int] | None = None
) -> list[Span | None]:
    """:func:`offset_spans` of one row of a fast tokenizer's output (called with
    ``return_offsets_mapping=True``)."""
    return offset_spans(encoding.sequence_ids(row), encoding["offset_mapping"][row], texts, shifts)


def word_starts(words: Sequence[str]) -> list[int]:
    """Where each word starts in the words joined by single spaces."""
    starts, at = [], 0
    for word in words:
        starts.append(at)
        at += len(word) + 1
    return starts


def word_spans(
    word_ids: Sequence[int | None],
    offsets: Sequence[Sequence[int]],
    words: Sequence[str],
    first_word: int = 0,
) -> list[Span | None]:
    """The :data:`Span` of every token of a tokenizer's output on pre-split words
    (``is_split_into_words=True``): its word ids (None: a special token) and offsets (within
    each word), as positions in the words joined by single spaces. Word ``i`` of the output is
    ``words[first_word + i]`` (a window of the words encoded on its own)."""
    starts = word_starts(words)
    spans: list[Span | None] = []
    for word, (start, end) in zip(word_ids, offsets):
        if word is None:
            spans.append((SPECIAL, 0, 0))
            continue
        index = first_word + word
        start, end = trimmed(words[index], start, end)
        base = starts[index]
        spans.append((0, base + start, base + end) if end > start else None)
    return spans


def unit_maps(
    student: Sequence[Span | None], teacher: Sequence[Span | None]
) -> tuple[list[int], list[int]]:
    """The unit of every student and teacher token (-1: none), from the tokens' spans.

    Units are the smallest spans on which both tokenizations cut: overlapping token spans of
    either side merge, within a segment. A unit needs tokens on both sides. Special tokens pair
    by order when both sides have as many, else only the first of each. Units are numbered by
    their first student token, so with one tokenizer unit i is token i."""
    groups: list[tuple[list[int], list[int]]] = []
    s_special = [i for i, x in enumerate(student) if x is not None and x[0] == SPECIAL]
    t_special = [i for i, x in enumerate(teacher) if x is not None and x[0] == SPECIAL]
    if len(s_special) != len(t_special):
        s_special, t_special = s_special[:1], t_special[:1]
    groups += [([s], [t]) for s, t in zip(s_special, t_special)]
    intervals = sorted(
        (span[0], span[1], span[2], side, position)
        for side, spans in ((0, student), (1, teacher))
        for position, span in enumerate(spans)
        if span is not None and span[0] != SPECIAL
    )
    segment, end = None, -1
    for start_segment, start, stop, side, position in intervals:
        if start_segment != segment or start >= end:
            groups.append(([], []))
            segment, end = start_segment, stop
        groups[-1][side].append(position)
        end = max(end, stop)
    kept = sorted((g for g in groups if g[0] and g[1]), key=lambda g: min(g[0]))
    s_units, t_units = [-1] * len(student), [-1] * len(teacher)
    for unit, (s_positions, t_positions) in enumerate(kept):
        for position in s_positions:
            s_units[position] = unit
        for position in t_positions:
            t_units[position] = unit
    return s_units, t_units


def teacher_columns(encoding: Any) -> dict[str, list[Any]]:
    """The teacher's model inputs of a tokenizer output, under :func:`teacher_key`."""
    return {
        teacher_key(name): encoding[name]
        for name in ("input_ids", "attention_mask", "token_type_ids")
        if name in encoding
    }


def without_offsets(encoding: Any) -> dict[str, list[Any]]:
    """A tokenizer output's columns without offsets and window bookkeeping."""
    return {
        k: v
        for k, v in encoding.items()
        if k not in ("offset_mapping", "overflow_to_sample_mapping")
    }


def paired_text_features(
    student: Any, teacher: Any, texts: Sequence[Sequence[str]]
) -> dict[str, list[Any]]:
    """Columns of texts tokenised by both sides (one feature per row, no windows): the
    student's inputs, the teacher's under :func:`teacher_key` and both unit maps. ``student``
    and ``teacher``: the tokenizers' outputs with offsets; ``texts``: each row's texts by
    segment."""
    s_units, t_units = [], []
    for row, row_texts in enumerate(texts):
        s, t = unit_maps(
            encoding_spans(student, row, row_texts), encoding_spans(teacher, row, row_texts)
        )
        s_units.append(s)
        t_units.append(t)
    return {
        **without_offsets(student),
        **teacher_columns(teacher),
        STUDENT_UNITS: s_units,
        TEACHER_UNITS: t_units,
    }


def check_fast(*tokenizers: Any) -> None:
    """ConfigError unless every tokenizer is a fast one (character offsets)."""
    for tokenizer in tokenizers:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(
                f"aligning two tokenizations needs fast tokenizers (character offsets), and "
                f"{type(tokenizer).__name__} is not one"
            )


# --------------------------------------------------------------------------------------------
# Batches: both sides' inputs, padded; the teacher's view
# --------------------------------------------------------------------------------------------


def crosses_tokenizers(batch: Mapping[str, Any]) -> bool:
    """Whether a batch carries two tokenizations (and the maps between them)."""
    return STUDENT_UNITS in batch and TEACHER_UNITS in batch


def teacher_inputs(batch: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the teacher reads from a batch: the batch itself, or of a cross-tokenised batch
    its own inputs (and labels) under the usual names, with every other entry (the cache's
    row index) kept."""
    if teacher_key("input_ids") not in batch:
        return batch
    own = {teacher_key(name): name for name in TEACHER_COLUMNS}
    view = {
        k: v
        for k, v in batch.items()
        if k not in MODEL_INPUTS and k not in own and k not in UNIT_KEYS
    }
    view.update({name: batch[key] for key, name in own.items() if key in batch})
    return view


def pad_units(rows: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """Unit maps padded with -1 to ``length`` (a collated batch's length)."""
    out = torch.full((len(rows), length), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.as_tensor(list(row)[:length], dtype=torch.long)
    return out


class CrossTokenizerCollator:
    """Collates cross-tokenised features: the student's columns with the student's collator,
    the teacher's (:data:`TEACHER_COLUMNS` under :func:`teacher_key`) with the teacher's, and
    the unit maps padded with -1 to each side's length."""

    def __init__(self, student: Callable[[list[dict]], Any], teacher: Callable[[list[dict]], Any]):
        self.student = student
        self.teacher = teacher

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        own = {teacher_key(name): name for name in TEACHER_COLUMNS}
        students = [
            {k: v for k, v in f.items() if k not in own and k not in UNIT_KEYS} for f in features
        ]
        teachers = [{name: f[key] for key, name in own.items() if key in f} for f in features]
        batch = dict(self.student(students))
        taught = self.teacher(teachers)
        batch.update(
            {teacher_key(name): taught[name] for name in TEACHER_COLUMNS if name in taught}
        )
        if all(STUDENT_UNITS in f for f in features):
            batch[STUDENT_UNITS] = pad_units(
                [f[STUDENT_UNITS] for f in features], batch["input_ids"].shape[1]
            )
            batch[TEACHER_UNITS] = pad_units(
                [f[TEACHER_UNITS] for f in features], taught["input_ids"].shape[1]
            )
        return batch


def teacher_features(features: Any) -> Any:
    """The teacher's columns of cross-tokenised features (a ``datasets.Dataset``) under the
    usual names, in the same row order: what a teacher cache stores outputs for."""
    own = {teacher_key(name): name for name in TEACHER_COLUMNS}
    present = [key for key in own if key in features.column_names]
    return features.select_columns(present).rename_columns({k: own[k] for k in present})


# --------------------------------------------------------------------------------------------
# Features on units
# --------------------------------------------------------------------------------------------


class _LazyStates(Sequence):
    """Hidden states moved onto units when read (a term reads only its layers)."""

    def __init__(
        self, states: Sequence[torch.Tensor], move: Callable[[torch.Tensor], torch.Tensor]
    ):
        self.states = states
        self.move = move
        self.done: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        index = index % len(self.states)
        if index not in self.done:
            self.done[index] = self.move(self.states[index])
        return self.done[index]


class _LazyMap(Mapping):
    """A mapping whose values are moved onto units when read."""

    def __init__(self, source: Mapping[Any, Any], move: Callable[[Any, Any], Any]):
        self.source = source
        self.move = move
        self.done: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        if key not in self.done:
            self.done[key] = self.move(key, self.source[key])  # KeyError when absent
        return self.done[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.source)

    def __len__(self) -> int:
        return len(self.source)


class UnitAlignment:
    """One cross-tokenised batch's unit maps, and either model's features moved onto them.

    ``features(f, side, outputs)``: the features on units (lazily: only what a term reads is
    moved, once per batch); ``batch_for(outputs)``: the batch the terms then read, its attention
    mask marking the units both sides have, label keys of token outputs marking the units whose
    first pieces are labelled on both sides."""

    def __init__(self, batch: Mapping[str, torch.Tensor]):
        self.batch = batch
        units = {"student": batch[STUDENT_UNITS].long(), "teacher": batch[TEACHER_UNITS].long()}
        count = max(1, int(max(u.max() for u in units.values()).item()) + 1)
        self.count = count
        self.maps = {
            side: u.unsqueeze(-1) == torch.arange(count, device=u.device)
            for side, u in units.items()
        }  # (batch, length, units) bool
        self.sizes = {side: m.sum(1) for side, m in self.maps.items()}  # (batch, units)
        self.valid = (self.sizes["student"] > 0) & (self.sizes["teacher"] > 0)
        self._first: dict[str, torch.Tensor] = {}
        self._memo: dict[tuple[str, int], torch.Tensor] = {}

    @classmethod
    def of(cls, batch: Mapping[str, Any]) -> UnitAlignment | None:
        """The alignment of a cross-tokenised batch; None for an ordinary one."""
        return cls(batch) if crosses_tokenizers(batch) else None

    def _map(self, side: str, x: torch.Tensor) -> torch.Tensor:
        tokens = self.maps[side]
        if x.shape[1] != tokens.shape[1]:
            raise ValueError(
                f"the {side} tensor has {x.shape[1]} positions and its unit map "
                f"{tokens.shape[1]}: the batch's {side}_units do not belong to its inputs"
            )
        return tokens

    def pool(self, x: torch.Tensor, side: str) -> torch.Tensor:
        """(batch, length, ...) -> (batch, units, ...): the mean over each unit's tokens."""
        key = (side, id(x))
        if key not in self._memo:
            tokens = self._map(side, x)
            weights = tokens.to(x.dtype) / self.sizes[side].clamp_min(1).unsqueeze(1).to(x.dtype)
            flat = x.reshape(x.shape[0], x.shape[1], -1)
            pooled = torch.einsum("blu,bld->bud", weights, flat)
            self._memo[key] = pooled.reshape(x.shape[0], self.count, *x.shape[2:])
        return self._memo[key]

    def first_positions(self, side: str) -> torch.Tensor:
        """(batch, units): the position of each unit's first token (0 for an empty unit)."""
        if side not in self._first:
            tokens = self.maps[side]
            length = tokens.shape[1]
            positions = torch.arange(length, device=tokens.device).view(1, -1, 1)
            first = torch.where(tokens, positions, length).amin(1)
            self._first[side] = torch.where(first < length, first, 0)
        return self._first[side]

    def first(self, x: torch.Tensor, side: str) -> torch.Tensor:
        """(batch, length, ...) -> (batch, units, ...): each unit's first token."""
        self._map(side, x)
        positions = self.first_positions(side)
        rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
        return x[rows, positions.to(x.device)]

    def span_logits(self, x: torch.Tensor, side: str) -> torch.Tensor:
        """(batch, length) logits of a distribution over positions -> (batch, units): the
        log of each unit's share of the probability (log-sum-exp over its tokens), up to a
        constant per row that the softmax removes."""
        tokens = self._map(side, x)
        low = torch.finfo(torch.float32).min
        spread = x.float().unsqueeze(-1).masked_fill(~tokens, low)
        return torch.logsumexp(spread, dim=1)

    def output(self, spec: OutputSpec, x: torch.Tensor, side: str) -> torch.Tensor:
        """One task output on units: per example unchanged, per token the first piece, over
        positions the units' probability mass."""
        if spec.over == "positions":
            return self.span_logits(x, side)
        if spec.rows == "example":
            return x
        return self.first(x, side)

    def features(self, features: Features, side: str, outputs: Sequence[OutputSpec]) -> Features:
        """``features`` of one model (``side``: student or teacher) on units."""
        specs = {spec.name: spec for spec in outputs}
        moved = Features(
            outputs={
                name: self.output(specs[name], value, side) if name in specs else value
                for name, value in features.outputs.items()
            },
            modules=dict(features.modules),
        )
        if features.hidden_states is not None:
            moved.hidden_states = _LazyStates(  # type: ignore[assignment]
                features.hidden_states, lambda h: self.pool(h, side)
            )
        moved.layer_modules = _LazyMap(  # type: ignore[assignment]
            features.layer_modules, lambda _key, value: self.pool(value, side)
        )
        return moved

    def batch_for(self, outputs: Sequence[OutputSpec]) -> dict[str, Any]:
        """The batch knowledge terms read on units: the attention mask marks the units both
        sides have; a token output's label key marks the units whose first pieces carry a
        label on both sides (0; -100 elsewhere), as the first piece of each word does."""
        batch = dict(self.batch)
        batch["attention_mask"] = self.valid.long()
        for spec in outputs:
            if spec.over != "classes" or spec.rows == "example" or not spec.label_key:
                continue
            keep = self.valid
            for side, key in (
                ("student", spec.label_key),
                ("teacher", teacher_key(spec.label_key)),
            ):
                labels = self.batch.get(key)
                if labels is not None:
                    keep = keep & (self.first(labels, side) != -100)
            batch[spec.label_key] = torch.where(keep, 0, -100)
        return batch
