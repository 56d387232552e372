"""Taking features out of Hugging Face models without editing their code.

A loss term declares what it needs (:class:`FeatureNeeds`); :func:`extract_features` runs one
forward pass that returns exactly that: logits always, hidden states and attention maps through
the model's own ``output_*`` flags, anything else through forward hooks on named modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureNeeds:
    """What a forward pass must expose for a set of loss terms."""

    hidden_states: bool = False
    attentions: bool = False
    modules: frozenset[str] = frozenset()

    def __or__(self, other: FeatureNeeds) -> FeatureNeeds:
        return FeatureNeeds(
            hidden_states=self.hidden_states or other.hidden_states,
            attentions=self.attentions or other.attentions,
            modules=self.modules | other.modules,
        )


@dataclass
class Features:
    """One model's view of a batch.

    ``hidden_states[0]`` is the embedding output and ``hidden_states[i]`` the output of layer i
    (1-based); ``attentions[i - 1]`` is layer i's attention probabilities (batch, heads, q, k).
    ``modules`` maps a module path to that module's output.
    """

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    modules: dict[str, torch.Tensor] = field(default_factory=dict)


def prepare_model(model: nn.Module, needs: FeatureNeeds) -> None:
    """Switch to eager attention only when attention maps are needed (fused kernels hide them)."""
    if needs.attentions and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")


@contextmanager
def capture_modules(model: nn.Module, names: frozenset[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named submodules during the forward passes inside the block."""
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
    with capture_modules(model, needs.modules) as captured:
        out = model(
            **kwargs,
            output_hidden_states=needs.hidden_states,
            output_attentions=needs.attentions,
            return_dict=True,
        )
    if needs.attentions and not out.attentions:
        raise RuntimeError(
            f"{type(model).__name__} returned no attention maps; call prepare_model() first "
            "(attention maps need the eager attention implementation)"
        )
    return Features(
        logits=out.logits,
        hidden_states=out.hidden_states if needs.hidden_states else None,
        attentions=out.attentions if needs.attentions else None,
        modules=dict(captured),
    )
