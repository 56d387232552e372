"""Taking features out of Hugging Face models without editing their code.

A loss term declares what it needs (:class:`FeatureNeeds`); :func:`extract_features` runs one
forward pass that returns exactly that: the task's outputs (logits, start/end logits) by name,
hidden states through the model's own ``output_hidden_states`` flag, anything else through
forward hooks on named modules. Attention distributions are rebuilt from the hooked query and
key projections rather than taken from ``output_attentions``: those maps come after attention
dropout (wrong targets for a student in train mode) and need the slow eager kernel.

Per-layer modules (a layer's query/key/value projections, its feed-forward ``intermediate``
block) are asked for *symbolically*, as ``(kind, layer)`` with ``layer`` 1-based like
``hidden_states`` (layer i is ``encoder.layer.{i-1}``), because the loss terms are built from
configs before any model exists. :func:`resolve_layer_modules` turns them into module names
against the actual model by pattern (:data:`LAYER_MODULE_PATTERNS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from kdformer.configbase import ConfigError

LayerModule = tuple[str, int]
"""A symbolic per-layer module request: (kind, 1-based layer), e.g. ("query", 3)."""

LAYER_MODULE_PATTERNS: dict[str, str] = {
    "query": r"(?:.*\.)?layer\.(\d+)\.attention\.self\.query",
    "key": r"(?:.*\.)?layer\.(\d+)\.attention\.self\.key",
    "value": r"(?:.*\.)?layer\.(\d+)\.attention\.self\.value",
    "intermediate": r"(?:.*\.)?layer\.(\d+)\.intermediate",
}
"""Module-name patterns per kind; the number is the 0-based layer index. BERT, RoBERTa, ELECTRA,
Longformer, BigBird (and models sharing their layout) name them
``<base>.encoder.layer.{i}.attention.self.{query,key,value}`` and ``<base>.encoder.layer.{i}
.intermediate`` (the feed-forward output after its activation)."""


@dataclass(frozen=True)
class OutputSpec:
    """One model output a task distils and trains on, and how its rows are compared.

    ``over``: ``classes`` is a distribution over the last dimension (class logits, per example
    or per token); ``positions`` a distribution over the sequence (extractive QA's start and
    end logits, one per example, padding excluded). ``rows`` (for ``classes``): ``example``
    (one row per example), ``token`` (every real token) or ``labelled`` (tokens whose gold
    label in ``label_key`` is not -100, e.g. the first word piece of each word).
    ``label_key``: the batch key holding this output's gold labels (None: no hard labels)."""

    name: str
    label_key: str | None = None
    over: Literal["classes", "positions"] = "classes"
    rows: Literal["example", "token", "labelled"] = "example"


@dataclass(frozen=True)
class FeatureNeeds:
    """What a forward pass must expose for a set of loss terms."""

    outputs: frozenset[str] = frozenset()
    """Names of task outputs to keep (``logits``, ``start_logits``, ...)."""
    hidden_states: bool = False
    modules: frozenset[str] = frozenset()
    layer_modules: frozenset[LayerModule] = frozenset()
    """Symbolic per-layer modules, (kind, 1-based layer); resolved against each model by
    :func:`resolve_layer_modules`. A layer the model does not have is skipped, so one
    ``FeatureNeeds`` can carry both the teacher's and the student's requests."""

    def __or__(self, other: FeatureNeeds) -> FeatureNeeds:
        return FeatureNeeds(
            outputs=self.outputs | other.outputs,
            hidden_states=self.hidden_states or other.hidden_states,
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


def _layer_module_index(model: nn.Module, kinds: Iterable[str]) -> dict[str, dict[int, str]]:
    """For each kind, {1-based layer: module name} found in ``model`` by pattern."""
    compiled = {kind: re.compile(LAYER_MODULE_PATTERNS[kind]) for kind in kinds}
    index: dict[str, dict[int, str]] = {kind: {} for kind in compiled}
    for name, _ in model.named_modules():
        for kind, pattern in compiled.items():
            match = pattern.fullmatch(name)
            if match is None:
                continue
            layer = int(match.group(1)) + 1
            if layer in index[kind]:
                raise ConfigError(
                    f"{type(model).__name__} has more than one '{kind}' module for layer {layer}: "
                    f"{index[kind][layer]} and {name}; per-layer knowledge supports one encoder "
                    "stack"
                )
            index[kind][layer] = name
    return index


def resolve_layer_modules(
    model: nn.Module, requests: Iterable[LayerModule], skip_missing_layers: bool = True
) -> dict[LayerModule, str]:
    """Module names in ``model`` for symbolic ``(kind, layer)`` requests (layer 1-based).

    A model without any module of a requested kind raises a :class:`ConfigError` naming the
    model class and the pattern looked for. A layer beyond the model's depth is skipped (the
    default; the request may be for the other model of the pair) or raises."""
    requests = set(requests)
    unknown = sorted({kind for kind, _ in requests} - set(LAYER_MODULE_PATTERNS))
    if unknown:
        raise ValueError(
            f"unknown layer module kind(s) {unknown}; valid: {', '.join(LAYER_MODULE_PATTERNS)}"
        )
    index = _layer_module_index(model, {kind for kind, _ in requests})
    resolved: dict[LayerModule, str] = {}
    for kind, layer in sorted(requests):
        found = index[kind]
        if not found:
            raise ConfigError(
                f"{type(model).__name__} has no per-layer '{kind}' modules: looked for module "
                f"names matching '{LAYER_MODULE_PATTERNS[kind]}' (the BERT/RoBERTa/ELECTRA "
                "layout, encoder.layer.N.attention.self.query/key/value and "
                "encoder.layer.N.intermediate). Knowledge types that read query/key/value or "
                "intermediate outputs (attention with loss: mse, value_relation, qkv_relations, "
                "intermediate) do not support this model; use logits, hidden, embedding or "
                "attention with loss: kl"
            )
        if layer in found:
            resolved[(kind, layer)] = found[layer]
        elif not skip_missing_layers:
            raise ConfigError(
                f"{type(model).__name__} has no layer {layer} '{kind}' module: it has "
                f"{len(found)} layers (valid 1..{len(found)})"
            )
    return resolved


def prepare_model(model: nn.Module, needs: FeatureNeeds) -> None:
    """Check, before training, that the model has every module the needs name (the fused
    attention kernel stays on: no knowledge type needs attention maps from the model)."""
    if needs.layer_modules:  # fail now, before training, if the model lacks the modules
        resolve_layer_modules(model, needs.layer_modules)


@contextmanager
def capture_modules(model: nn.Module, names: frozenset[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named submodules during the forward passes inside the block."""
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

        def hook(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
            outputs[name] = output[0] if isinstance(output, tuple) else output  # type: ignore[assignment]

        handles.append(found[name].register_forward_hook(hook))
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


def extract_features(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], needs: FeatureNeeds
) -> Features:
    """Run ``model`` once on ``inputs`` and return the features ``needs`` asks for."""
    kwargs = {k: v for k, v in inputs.items() if k in MODEL_INPUTS}
    layer_names = resolve_layer_modules(model, needs.layer_modules) if needs.layer_modules else {}
    with capture_modules(model, needs.modules | frozenset(layer_names.values())) as captured:
        out = model(**kwargs, output_hidden_states=needs.hidden_states, return_dict=True)
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
        layer_modules={request: captured[name] for request, name in layer_names.items()},
    )
