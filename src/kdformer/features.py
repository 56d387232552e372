"""Taking features out of Hugging Face models without editing their code.

A loss term declares what it needs (:class:`FeatureNeeds`); :func:`extract_features` runs one
forward pass that returns exactly that: the task's outputs (logits, start/end logits) by name,
hidden states through the model's own ``output_hidden_states`` flag, anything else through
forward hooks on named modules. Attention distributions are rebuilt from the hooked query and
key projections rather than taken from ``output_attentions``: those maps come after attention
dropout (wrong targets for a student in train mode) and need the slow eager kernel.

Per-layer tensors (a layer's query/key/value vectors, its activated feed-forward units) are
asked for *symbolically*, as ``(kind, layer)`` with ``layer`` 1-based like ``hidden_states``,
because the loss terms are built from configs before any model exists. :func:`resolve_taps`
turns them into module names and taps against the actual model, from its family declaration
(:mod:`kdformer.families`): only the families know how an architecture names its modules.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from kdformer.config.base import ConfigError
from kdformer.families import Tap, family_of

LayerModule = tuple[str, int]
"""A symbolic per-layer module request: (kind, 1-based layer), e.g. ("query", 3)."""

LAYER_MODULE_KINDS = ("query", "key", "value", "intermediate")
"""Per-layer tensors a loss term can ask for; each model family declares where they are read
(:class:`kdformer.families.Tap`): BERT's ``encoder.layer.{i}.attention.self.query``, DistilBERT's
``transformer.layer.{i}.attention.q_lin``, a chunk of ModernBERT's fused ``attn.Wqkv``..."""


@dataclass(frozen=True)
class OutputSpec:
    """One model output a task distils and trains on, and how its rows are compared.

    ``over``: ``classes`` is a distribution over the last dimension (class logits, per example
    or per token); ``positions`` a distribution over the sequence (extractive QA's start and
    end logits, one per example, padding excluded). ``rows`` (for ``classes``): ``example``
    (one row per example), ``token`` (every real token) or ``labelled`` (tokens whose gold
    label in ``label_key`` is not -100, e.g. the first word piece of each word).
    ``label_key``: the batch key holding this output's gold labels (None: no hard labels).
    ``shift`` (token rows only): how many positions later a token row's label lies. 0 (a
    token's own label: NER, masked LM); 1 for a causal LM, whose output at position t predicts
    token t+1: ``logits[:, :-1]`` pair with ``labels[:, 1:]`` (as transformers' causal-LM loss
    pairs them), for the hard labels and for the rows soft labels compare alike, and a row
    counts when its target position is real (or labelled)."""

    name: str
    label_key: str | None = None
    over: Literal["classes", "positions"] = "classes"
    rows: Literal["example", "token", "labelled"] = "example"
    shift: int = 0

    def __post_init__(self) -> None:
        if self.shift < 0:
            raise ValueError(f"OutputSpec {self.name!r}: shift must be 0 or more, not {self.shift}")
        if self.shift and (self.over != "classes" or self.rows == "example"):
            raise ValueError(
                f"OutputSpec {self.name!r}: shift pairs token rows with later labels; it has no "
                f"meaning for {self.over} outputs with {self.rows} rows"
            )

    def output_rows(self, value: torch.Tensor) -> torch.Tensor:
        """The positions of a (batch, seq, ...) output that have a target: all but the last
        ``shift``."""
        return value[:, : value.shape[1] - self.shift] if self.shift else value

    def target_rows(self, value: torch.Tensor) -> torch.Tensor:
        """The entries of a (batch, seq, ...) batch tensor (labels, attention mask) that
        :meth:`output_rows` are compared with: all but the first ``shift``."""
        return value[:, self.shift :] if self.shift else value


@dataclass(frozen=True)
class FeatureNeeds:
    """What a forward pass must expose for a set of loss terms."""

    outputs: frozenset[str] = frozenset()
    """Names of task outputs to keep (``logits``, ``start_logits``, ...)."""
    hidden_states: bool = False
    hidden_layers: frozenset[int] = frozenset()
    """Which ``hidden_states`` entries the terms read (0: the embedding output); empty with
    ``hidden_states`` means all. A forward pass returns them all anyway; the teacher-output
    cache stores only these."""
    modules: frozenset[str] = frozenset()
    layer_modules: frozenset[LayerModule] = frozenset()
    """Symbolic per-layer modules, (kind, 1-based layer); resolved against each model by
    :func:`resolve_layer_modules`. A layer the model does not have is skipped, so one
    ``FeatureNeeds`` can carry both the teacher's and the student's requests."""

    def __or__(self, other: FeatureNeeds) -> FeatureNeeds:
        return FeatureNeeds(
            outputs=self.outputs | other.outputs,
            hidden_states=self.hidden_states or other.hidden_states,
            hidden_layers=self.hidden_layers | other.hidden_layers,
            modules=self.modules | other.modules,
            layer_modules=self.layer_modules | other.layer_modules,
        )


@dataclass
class Features:
    """One model's view of a batch.

    ``outputs`` maps a task output name (``logits``, ``start_logits``, ...) to its tensor;
    ``hidden_states[0]`` is the embedding output and ``hidden_states[i]`` the output of layer i
    (1-based). ``modules`` maps a module path to that module's output; ``layer_modules`` maps a
    symbolic request such as ``("query", 2)`` (1-based layer) to that module's output.
    """

    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    modules: dict[str, torch.Tensor] = field(default_factory=dict)
    layer_modules: dict[LayerModule, torch.Tensor] = field(default_factory=dict)

    @property
    def logits(self) -> torch.Tensor:
        """The ``logits`` output (classification, token classification, masked LM)."""
        return self.outputs["logits"]


def resolve_taps(
    model: nn.Module, requests: Iterable[LayerModule], skip_missing_layers: bool = True
) -> dict[LayerModule, tuple[str, Tap]]:
    """Module name and tap in ``model`` for symbolic ``(kind, layer)`` requests (layer 1-based),
    from the model's family declaration.

    A model of no declared family raises a :class:`ConfigError` listing the families. A layer
    beyond the model's depth is skipped (the default; the request may be for the other model of
    the pair) or raises."""
    requests = set(requests)
    unknown = sorted({kind for kind, _ in requests} - set(LAYER_MODULE_KINDS))
    if unknown:
        raise ValueError(
            f"unknown layer module kind(s) {unknown}; valid: {', '.join(LAYER_MODULE_KINDS)}"
        )
    family = family_of(model)
    layers = family.layer_list(model)
    prefix = family.layers_prefix(model)
    resolved: dict[LayerModule, tuple[str, Tap]] = {}
    for kind, layer in sorted(requests):
        tap = family.taps[kind]
        if 1 <= layer <= len(layers):
            name = f"{prefix}.{layer - 1}.{tap.path}"
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ConfigError(
                    f"{type(model).__name__} ({family.name}) has no module {name} for the "
                    f"per-layer '{kind}' tensor; its family declaration does not fit this class"
                ) from None
            resolved[(kind, layer)] = (name, tap)
        elif not skip_missing_layers:
            raise ConfigError(
                f"{type(model).__name__} has no layer {layer} '{kind}' module: it has "
                f"{len(layers)} layers (valid 1..{len(layers)})"
            )
    return resolved


def resolve_layer_modules(
    model: nn.Module, requests: Iterable[LayerModule], skip_missing_layers: bool = True
) -> dict[LayerModule, str]:
    """Module names in ``model`` for symbolic ``(kind, layer)`` requests (see
    :func:`resolve_taps`)."""
    return {
        request: name
        for request, (name, _) in resolve_taps(model, requests, skip_missing_layers).items()
    }


def prepare_model(model: nn.Module, needs: FeatureNeeds) -> None:
    """Check, before training, that the model has every module the needs name (the fused
    attention kernel stays on: no knowledge type needs attention maps from the model)."""
    if needs.layer_modules:  # fail now, before training, if the model lacks the modules
        resolve_taps(model, needs.layer_modules)


@contextmanager
def capture_modules(
    model: nn.Module, names: frozenset[str], taps: Mapping[str, Tap] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named submodules during the forward passes inside the block;
    a name with a :class:`Tap` in ``taps`` is read as the tap says (input or output, a chunk,
    in (batch, seq, width) layout)."""
    taps = dict(taps or {})
    if not names:
        yield {}
        return
    found = dict(model.named_modules())
    missing = sorted(n for n in names if n not in found)
    if missing:
        raise KeyError(f"{type(model).__name__} has no module(s) {missing}")
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        tap = taps.get(name, Tap(name))

        def read(value: object, name: str = name, tap: Tap = tap) -> None:
            value = value[0] if isinstance(value, tuple) else value
            outputs[name] = tap.read(value)  # type: ignore[arg-type]

        if tap.io == "input":
            handles.append(
                found[name].register_forward_pre_hook(lambda _m, inputs, read=read: read(inputs))
            )
        else:
            handles.append(
                found[name].register_forward_hook(lambda _m, _i, output, read=read: read(output))
            )
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "position_ids",
    "global_attention_mask",
)


def teacher_key(name: str) -> str:
    """The batch key of the teacher's own copy of a model input or label key when teacher and
    student tokenise the text differently (a student with its own vocabulary):
    ``teacher_input_ids``, ``teacher_attention_mask``, ``teacher_labels``..."""
    return f"teacher_{name}"


def extract_features(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], needs: FeatureNeeds
) -> Features:
    """Run ``model`` once on ``inputs`` and return the features ``needs`` asks for."""
    kwargs = model_inputs(model, inputs)
    taps = resolve_taps(model, needs.layer_modules) if needs.layer_modules else {}
    layer_names = {request: name for request, (name, _) in taps.items()}
    by_name = dict(taps.values())
    with capture_modules(model, needs.modules | frozenset(by_name), by_name) as captured:
        out = model(**kwargs, output_hidden_states=needs.hidden_states, return_dict=True)
    length = kwargs["input_ids"].shape[1] if "input_ids" in kwargs else None
    missing = sorted(name for name in needs.outputs if out.get(name) is None)
    if missing:
        raise ValueError(
            f"{type(model).__name__} returned no output(s) {missing} (it returned "
            f"{list(out.keys())}): load it with the task's model class"
        )
    return Features(
        outputs={name: out[name] for name in needs.outputs},
        hidden_states=out.hidden_states if needs.hidden_states else None,
        modules={name: captured[name] for name in needs.modules},
        # Models that pad inside (Longformer, to a multiple of its window) give longer taps.
        layer_modules={
            request: captured[name][:, :length] for request, name in layer_names.items()
        },
    )


def model_inputs(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a batch that ``model``'s forward takes (DistilBERT and ModernBERT take no
    token type ids; only Longformer takes a global attention mask)."""
    accepted = _forward_parameters(type(model))
    return {k: v for k, v in inputs.items() if k in MODEL_INPUTS and k in accepted}


@functools.cache
def _forward_parameters(model_class: type) -> frozenset[str]:
    """The inputs a model class's forward names; one that names no ``input_ids`` takes them
    all through ``**kwargs`` (then every usual input is passed)."""
    names = frozenset(inspect.signature(model_class.forward).parameters)
    return names if "input_ids" in names else frozenset(MODEL_INPUTS)
