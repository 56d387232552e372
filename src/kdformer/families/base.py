"""What a model family declares, and how the rest of kdformer finds a model's family.

Only these declarations know how an architecture names and lays out its modules. Feature
extraction (:mod:`kdformer.features`), student shaping (:mod:`kdformer.students`), pruning
(:mod:`kdformer.pruning`) and the objective's checks ask the family of a model (by its config's
``model_type``) for:

* where the encoder layers and embeddings live (module paths from the base model);
* *taps*: where a layer's query, key, value and activated feed-forward vectors are read (a
  module's output or input, a slice of a fused projection, sequence-first layouts);
* the modules pruning slices and which dimension of each weight is heads, neurons or hidden;
* which config fields change with depth (per-layer lists) and width;
* what its attention is (``full``: softmax(QK^T/sqrt(d)) with the padding mask, so attention
  knowledge rebuilt from Q/K equals the model's own maps; ``banded``: local windows;
  ``None``: not rebuildable from Q/K) and so which knowledge types it can supply;
* input rules that must hold before training (window sizes, fixed lengths);
* how a model converted from a full-attention encoder starts (:mod:`kdformer.conversion`):
  where each weight comes from, and how positions are counted and extended.

A new family is one :class:`ModelFamily` (or subclass) registered with :func:`register_family`,
plus its tests (``tests/test_families.py`` runs every registered family through the same
checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from kdformer.config.base import ConfigError
from kdformer.config.knowledge import KNOWLEDGE_CONFIGS

#: Every knowledge type kdformer has (from the registry); a family lists the ones it cannot supply.
ALL_KNOWLEDGE = frozenset(KNOWLEDGE_CONFIGS)
#: Types that read per-layer query/key/value projections.
QKV_KNOWLEDGE = frozenset(name for name, cls in KNOWLEDGE_CONFIGS.items() if cls.reads_qkv)

Role = Literal["heads", "head_index", "neurons", "hidden"]
"""What one dimension of a layer weight indexes, for pruning: ``heads`` (rows of all heads,
head-major, ``heads x head size``), ``head_index`` (one entry per head, e.g. a per-head
convolution), ``neurons`` (feed-forward units) or ``hidden`` (the model width)."""


@dataclass(frozen=True)
class Tap:
    """Where one per-layer tensor is read, relative to the layer module.

    ``io``: the module's ``output`` or its (first positional) ``input``. ``part``:
    ``(index, count)`` takes the index-th of ``count`` equal chunks of the last dimension (a
    fused Q/K/V projection). ``seq_first``: the module returns (seq, batch, width)."""

    path: str
    io: Literal["output", "input"] = "output"
    part: tuple[int, int] | None = None
    seq_first: bool = False

    def read(self, value: torch.Tensor) -> torch.Tensor:
        """The tapped tensor in (batch, seq, width) layout."""
        if self.seq_first:
            value = value.transpose(0, 1)
        if self.part is not None:
            index, count = self.part
            value = value.chunk(count, dim=-1)[index]
        return value


@dataclass(frozen=True)
class Sliced:
    """A layer weight pruning slices: the role of each dimension of its weight (and bias),
    and, for fused projections, how many equal blocks the first dimension holds (Q/K/V: 3;
    a gated feed-forward: 2), each sliced alike."""

    weight: tuple[Role, ...]
    blocks: int = 1

    @property
    def bias(self) -> tuple[Role, ...]:
        return self.weight[:1]


@dataclass(frozen=True, eq=False)
class ModelFamily:
    """One architecture's layout. Fields are module paths relative to the base model
    (``model.base_model``) or to one encoder layer."""

    name: str
    model_types: tuple[str, ...]
    layers: str
    """Path of the ``nn.ModuleList`` of encoder layers, e.g. ``encoder.layer``."""
    embeddings: str
    taps: dict[str, Tap]
    """``query``, ``key``, ``value`` and ``intermediate`` (activated feed-forward units)."""
    attention_output: str
    """The layer module whose input is the concatenated per-head contexts (head masks go there)."""
    ffn_output: str
    """The layer module whose input is the activated feed-forward units (neuron masks go there)."""
    sliced: dict[str, Sliced]
    """Layer modules pruning slices, by path (optional ones may be absent from a model)."""
    attention: Literal["full", "banded"] | None = "full"
    attention_note: str = ""
    """Why attention knowledge is unavailable or what is compared (shown in errors and docs)."""
    intermediate_key: str = "intermediate_size"
    per_layer_keys: tuple[str, ...] = ()
    """Config fields holding one value per layer; a student keeps its source layers' values."""
    width_keys: tuple[str, ...] = ()
    """Config fields that equal the hidden size and must follow it (e.g. a pooler width)."""
    summary: Literal["first", "mean"] = "first"
    """How one vector sums up a sequence (BERT-PKD's loss): the first token ([CLS]/<s>) or the
    mean of real tokens, as the family's classification head pools."""
    unsupported: frozenset[str] = field(default_factory=frozenset)
    """Knowledge types this family cannot supply (besides attention when ``attention`` is None)."""
    pooler: str | None = None
    """Path of the pooler, a module a checkpoint may lack (None: the family has none)."""
    positions_after_padding: bool = False
    """Position ids start after the padding index (``pad_token_id + 1``, RoBERTa's scheme), so
    ``max_position_embeddings`` overstates the usable length by that much."""
    input_rule: str = ""
    """What :meth:`prepare` adds to the inputs a caller gives (e.g. default global tokens), with
    a version: the teacher cache keys on it, so outputs cached under an older rule are not
    read back as if the model still computed them (empty: the inputs are used as given)."""

    # ---- knowledge ------------------------------------------------------------------------

    def knowledge_types(self, config: Any) -> frozenset[str]:
        """The knowledge types a model of this family can supply."""
        types = ALL_KNOWLEDGE - self.unsupported
        if self.attention_kind(config) is None:
            types -= {"attention"}
        return types

    def attention_kind(self, config: Any) -> Literal["full", "banded"] | None:
        """``full``/``banded``/None for this model (BigBird depends on its attention type)."""
        return self.attention

    def attention_windows(self, config: Any) -> tuple[int, ...] | None:
        """Per layer, how far (in tokens, each side) a query sees, for banded attention."""
        return None

    def check_knowledge(self, config: Any, types: Sequence[str], role: str) -> None:
        """ConfigError before training when this model cannot supply a requested type."""
        supported = self.knowledge_types(config)
        missing = sorted(set(types) - supported)
        if missing:
            note = (
                f" ({self.attention_note})"
                if "attention" in missing and self.attention_note
                else ""
            )
            raise ConfigError(
                f"the {role} is a {self.name} model, which cannot supply the knowledge type(s) "
                f"{', '.join(missing)}{note}. {self.name} supports: {', '.join(sorted(supported))}"
            )

    # ---- shapes ---------------------------------------------------------------------------

    def summary_of(self, config: Any) -> str:
        """``first`` or ``mean``: how this model sums up a sequence in one vector."""
        return self.summary

    def intermediate_size(self, config: Any) -> int:
        return int(getattr(config, self.intermediate_key, 4 * int(config.hidden_size)))

    def reshape_config(self, config: Any, shape: dict[str, int], layers: Sequence[int]) -> None:
        """Give ``config`` (a copy of the teacher's) the student's shape in place. ``layers``:
        the 0-based teacher layer each student layer stands for (copied from, or, for a random
        student, spread over the teacher) whose per-layer settings it keeps."""
        teacher_hidden = int(config.hidden_size)
        config.num_hidden_layers = shape["num_layers"]
        config.hidden_size = shape["hidden_size"]
        config.num_attention_heads = shape["num_heads"]
        setattr(config, self.intermediate_key, shape["intermediate_size"])
        for key in self.width_keys:
            if getattr(config, key, None) == teacher_hidden:
                setattr(config, key, shape["hidden_size"])
        for key in self.per_layer_keys:
            value = getattr(config, key, None)
            if isinstance(value, (list, tuple)):
                setattr(config, key, [value[t] for t in layers])

    # ---- conversion from a full-attention encoder (kdformer.conversion) ---------------------

    def position_offset(self, config: Any) -> int:
        """Row of the position table that the first token uses."""
        if self.positions_after_padding:
            return int(getattr(config, "pad_token_id", 1) or 0) + 1
        return 0

    def usable_positions(self, config: Any) -> int:
        """The longest input a model of this family takes: its ``max_position_embeddings``
        less the rows before the first position."""
        return int(config.max_position_embeddings) - self.position_offset(config)

    def position_table(self) -> str:
        """The weight of the absolute position embeddings, from the base model."""
        return f"{self.embeddings}.position_embeddings.weight"

    def max_position_embeddings(self, config: Any, length: int) -> int:
        """The ``max_position_embeddings`` a model of this family needs to take inputs of
        ``length`` tokens: the rows before its first position count too."""
        return length + self.position_offset(config)

    def extend_positions(
        self, source: torch.Tensor, source_offset: int, config: Any, rows: int
    ) -> torch.Tensor:
        """This family's (rows, width) position table from a source table whose first position
        is row ``source_offset``: position ``p`` takes the source's learned position ``p mod
        learned`` (Longformer's recipe for longer inputs); rows before the first position keep
        the source's own."""
        offset = self.position_offset(config)
        learned = source.shape[0] - source_offset
        table = source.new_zeros(rows, source.shape[1])
        keep = min(offset, source_offset, rows)
        table[:keep] = source[:keep]
        positions = torch.arange(rows - offset)
        table[offset:] = source[source_offset + positions % learned]
        return table

    def converted_weight_source(self, key: str) -> str | None:
        """The full-attention source weight a converted model's weight ``key`` starts from (the
        same name: these layouts share BERT's); None when it starts at zero instead (a module
        full attention lacks, which then adds nothing until trained)."""
        return key

    def may_lack(self, key: str) -> bool:
        """Whether a source checkpoint may lack this weight (the pooler): it keeps its init."""
        return self.pooler is not None and key.startswith(self.pooler + ".")

    # ---- inputs ---------------------------------------------------------------------------

    def check_inputs(self, config: Any, max_length: int, role: str) -> None:  # noqa: B027
        """ConfigError before training when the family's rules do not hold for ``config`` at
        inputs of up to ``max_length`` tokens (window sizes, block-sparse limits...)."""

    def fixed_length(self, config: Any, max_length: int) -> int | None:
        """The one sequence length batches must have, when the family needs one (batches are
        then padded to it rather than to their longest input)."""
        return None

    def set_length(self, model: nn.Module, length: int) -> int | None:
        """Let a fixed-length model take inputs of ``length`` tokens (for timing at several
        lengths; Nyströmformer's landmarks follow the length); returns the length it had, to
        restore (None: the family has no fixed length)."""
        return None

    def length_note(self, config: Any, length: int) -> str:
        """What the model really runs at ``length`` tokens, when that is not what it says
        (BigBird falling back to full attention); empty otherwise."""
        return ""

    def prepare(self, model: nn.Module) -> None:  # noqa: B027  (an optional hook)
        """Anything the family needs to run correctly, through hooks (never model edits);
        called on every model kdformer loads or builds."""

    # ---- modules --------------------------------------------------------------------------

    def base(self, model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        """The encoder layers, with a clear error when the model is not laid out as declared."""
        try:
            layers = self.base(model).get_submodule(self.layers)
        except AttributeError:
            layers = None
        if not isinstance(layers, nn.ModuleList) or not len(layers):
            raise ConfigError(
                f"{type(model).__name__} is declared a {self.name} model but has no layers at "
                f"'{self.layers}'; its family declaration does not fit this class"
            )
        return layers

    def layers_prefix(self, model: nn.Module) -> str:
        """State-dict prefix of the layer list in ``model`` (e.g. ``bert.encoder.layer``)."""
        names = {id(m): n for n, m in model.named_modules()}
        return names[id(self.layer_list(model))]

    def embedding_module(self, model: nn.Module) -> nn.Module:
        return self.base(model).get_submodule(self.embeddings)


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add a family; its ``model_types`` must be new."""
    taken = [t for t in family.model_types if t in _FAMILIES]
    if taken:
        raise ValueError(f"model types {taken} already belong to {_FAMILIES[taken[0]].name}")
    for model_type in family.model_types:
        _FAMILIES[model_type] = family
    return family


def families() -> list[ModelFamily]:
    """Every registered family, once each, in registration order."""
    return list(dict.fromkeys(_FAMILIES.values()))


def find_family(model_or_config: Any) -> ModelFamily | None:
    """The family of a model or config by ``model_type``, or None when none is declared."""
    config = getattr(model_or_config, "config", model_or_config)
    return _FAMILIES.get(getattr(config, "model_type", None))  # type: ignore[arg-type]


def family_of(model_or_config: Any) -> ModelFamily:
    """The family of a model or config, by ``model_type``; a ConfigError listing the supported
    ones otherwise."""
    family = find_family(model_or_config)
    if family is not None:
        return family
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    names = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in families())
    raise ConfigError(
        f"kdformer has no model family for model_type '{model_type}' "
        f"({type(model_or_config).__name__}). Supported: {names}. A new family is one "
        "declaration in kdformer/families/"
    )


def intermediate_size_of(config: Any) -> int:
    """Feed-forward width of any model config: its family's field (DistilBERT: hidden_dim), or
    ``intermediate_size`` (4 x hidden when absent) for a model of no declared family."""
    family = find_family(config)
    if family is not None:
        return family.intermediate_size(config)
    return int(getattr(config, "intermediate_size", 4 * int(config.hidden_size)))


def check_models(models: Sequence[tuple[Any, str]], max_length: int) -> int | None:
    """Check each (config, role) against its family's input rules for inputs of up to
    ``max_length`` tokens, before any long work; return the one length batches must be padded
    to when a family needs one (None: pad each batch to its longest input)."""
    lengths: dict[int, str] = {}
    for config, role in models:
        family = find_family(config)
        if family is None:
            continue
        family.check_inputs(config, max_length, role)
        length = family.fixed_length(config, max_length)
        if length is not None:
            lengths.setdefault(length, role)
    if len(lengths) > 1:
        described = ", ".join(f"the {role} {length}" for length, role in lengths.items())
        raise ConfigError(
            f"the models need batches of different fixed lengths ({described} tokens); give "
            "them the same length (Nyströmformer: segment_means_seq_len)"
        )
    return next(iter(lengths), None)


def position_limit(config: Any) -> int | None:
    """The longest input (in tokens) a model's position embeddings cover, or None when it has
    no absolute positions (relative or rotary position schemes); the model's family says
    where its positions start."""
    limit = getattr(config, "max_position_embeddings", None)
    if (
        not isinstance(limit, int)
        or getattr(config, "position_embedding_type", "absolute") != "absolute"
    ):
        return None
    family = find_family(config)
    return family.usable_positions(config) if family is not None else limit
