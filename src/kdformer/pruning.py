"""Structured pruning: a narrower student made of the teacher's most important parts.

``init: pruned`` keeps, for each student layer (teacher layer chosen by ``init_layers``), the
most important attention heads and feed-forward neurons of that teacher layer, and the most
important hidden dimensions of the whole model, then copies the sliced teacher weights.

Importance comes from the teacher's task loss (cross-entropy, or MSE for regression) on a few
batches of training data, in eval mode (no dropout), without editing model code. A task without
gold labels (sentence embeddings, raw text) scores with the *output Fisher* instead: the squared
gradient of ``v . h`` for a fresh Gaussian ``v`` per token and draw, where ``h`` is the last
hidden state. Its expectation is the squared norm of each unit's effect on the last hidden state,
``E[(v . dh/dm)^2] = |dh/dm|^2``: the diagonal Fisher information of a Gaussian model of the output
with labels sampled from the model itself, as in Kwon et al. (2022), "A Fast Post-Training
Pruning Framework for Transformers". Every pooling (mean, CLS, max) reads that last hidden state,
so the units it depends on least go first.

* heads (Michel et al., 2019, "Are Sixteen Heads Really Better than One?"): a mask of ones per
  layer is multiplied into the per-head contexts (the input of the attention output
  projection, one factor per head) by a forward pre-hook;
  importance is ``|dL/d mask_h|`` accumulated over batches. ``head_mask`` is not used (transformers
  5 dropped it).
* FFN neurons: the same with a mask on the activated units (the input of the FFN output).
* hidden dimensions: first-order Taylor score ``|h * dL/dh|`` summed over tokens, batches and the
  hidden states of all layers (embedding output included).

Heads and FFN neurons are ranked per teacher layer (every student layer has the same width, as
transformers configs require); hidden dimensions globally, the same kept set for every
hidden-indexed weight: embeddings, LayerNorms, attention output, FFN output, pooler, task head.
Kept indices stay in their teacher order.

How widths relate: heads keep the teacher's head size, so the student's hidden size is
``num_heads x head size`` (transformers BERT derives the head size as hidden / heads); Q/K/V rows
and attention-output columns are sliced to the kept heads, their other side to the kept hidden
dimensions. Hence fewer heads always means a narrower hidden size. When only FFN neurons are
removed the outputs change only by what those neurons contributed; removing hidden dimensions
also changes LayerNorm statistics (mean and variance over fewer dimensions), which
distillation then recovers.

Supported: every declared model family (:mod:`kdformer.families`); each says which layer
modules hold heads, neurons and hidden dimensions in which weight dimension (fused Q/K/V and
gated feed-forward blocks, Nyströmformer's per-head convolution included).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdformer.config.base import ConfigError
from kdformer.families import ModelFamily, family_of
from kdformer.families.base import Role
from kdformer.features import model_inputs


@dataclass
class Importance:
    """Scores per unit (higher = more important), averaged over ``batches``."""

    heads: torch.Tensor  # (layers, heads)
    neurons: torch.Tensor  # (layers, intermediate)
    hidden: torch.Tensor  # (hidden,)
    batches: int


@dataclass
class PruningPlan:
    """What the student keeps; indices are the teacher's, in teacher order."""

    layers: list[int]  # teacher layer of each student layer
    heads: list[list[int]]  # kept heads, per student layer
    neurons: list[list[int]]  # kept FFN neurons, per student layer
    hidden: list[int]  # kept hidden dimensions (everywhere)
    head_size: int

    def head_rows(self, student_layer: int) -> list[int]:
        """Rows of Q/K/V (columns of the attention output) that belong to the kept heads."""
        size = self.head_size
        return [h * size + j for h in self.heads[student_layer] for j in range(size)]


# ------------------------------------------------------------------------------------------
# Finding the parts
# ------------------------------------------------------------------------------------------


def encoder_layers(model: nn.Module) -> tuple[nn.Module, nn.ModuleList, ModelFamily]:
    """(embeddings module, encoder layers, family) of a model, with a clear error when its
    family is not declared or its layers lack a module pruning needs."""
    family = family_of(model)
    layers = family.layer_list(model)
    found = dict(layers[0].named_modules())
    required = [family.attention_output, family.ffn_output]
    missing = [path for path in required if path not in found]
    if missing:
        raise ConfigError(
            f"init: pruned needs the {family.name} layer modules {missing}, which "
            f"{type(layers[0]).__name__} of {type(model).__name__} lacks. Use init: teacher or random"
        )
    return family.embedding_module(model), layers, family


# ------------------------------------------------------------------------------------------
# Importance
# ------------------------------------------------------------------------------------------


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _add_scores(
    grads: tuple[torch.Tensor | None, ...],
    states: list[torch.Tensor],
    n: int,
    head_scores: torch.Tensor,
    neuron_scores: torch.Tensor,
    hidden_scores: torch.Tensor,
    hidden: int,
    power: int = 1,
    weight: float = 1.0,
) -> None:
    """Add one backward pass's scores: ``|g|`` (task loss) or ``g^2`` (output Fisher) for the
    head and neuron masks, ``|h g|`` or ``(h g)^2`` per token for the hidden dimensions."""
    for i in range(n):
        if grads[i] is not None:
            head_scores[i] += weight * grads[i].abs().float() ** power
        if grads[n + i] is not None:
            neuron_scores[i] += weight * grads[n + i].abs().float() ** power
    for state, grad in zip(states, grads[2 * n :]):
        if grad is not None:
            score = (state.float() * grad.float()).abs().detach() ** power
            hidden_scores += weight * score.reshape(-1, hidden).sum(0)


def compute_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    max_batches: int = 8,
    label_keys: tuple[str, ...] = ("labels",),
    draws: int = 4,
    seed: int = 0,
) -> Importance:
    """Head, FFN-neuron and hidden-dimension importance of a task model from its loss gradients.

    ``batches``: collated dicts of tensors with the task's gold labels under ``label_keys``
    (the model computes its own task loss from them); the first ``max_batches`` are used. With
    no ``label_keys`` (a task without gold labels) the scores are the output Fisher of the last
    hidden state, averaged over ``draws`` Gaussian draws per batch (module docstring). The
    model's weights and mode are left as they were (no parameter gradients are accumulated).
    """
    embeddings, layers, family = encoder_layers(model)
    config = model.config
    heads, hidden = int(config.num_attention_heads), int(config.hidden_size)
    head_size = hidden // heads
    first = next(model.parameters())
    device, dtype = first.device, first.dtype
    head_masks = [torch.ones(heads, device=device, dtype=dtype, requires_grad=True) for _ in layers]
    neurons = family.intermediate_size(config)
    neuron_masks = [
        torch.ones(neurons, device=device, dtype=dtype, requires_grad=True) for _ in layers
    ]
    states: list[torch.Tensor] = []

    # Masks multiply the *inputs* of the attention output projection (the per-head contexts)
    # and of the feed-forward output projection (the activated units), wherever the family
    # declares them.
    def mask_heads(index: int):
        def hook(_module: nn.Module, inputs: tuple) -> tuple:
            context = inputs[0]
            shape = context.shape
            masked = context.reshape(*shape[:-1], heads, head_size) * head_masks[index][:, None]
            return (masked.reshape(shape), *inputs[1:])

        return hook

    def mask_neurons(index: int):
        def hook(_module: nn.Module, inputs: tuple) -> tuple:
            return (inputs[0] * neuron_masks[index], *inputs[1:])

        return hook

    def keep_state(_module: nn.Module, _inputs: Any, output: Any) -> None:
        states.append(_first(output))

    handles = [embeddings.register_forward_hook(keep_state)]
    for i, layer in enumerate(layers):
        attention_output = layer.get_submodule(family.attention_output)
        handles.append(attention_output.register_forward_pre_hook(mask_heads(i)))
        ffn_output = layer.get_submodule(family.ffn_output)
        handles.append(ffn_output.register_forward_pre_hook(mask_neurons(i)))
        handles.append(layer.register_forward_hook(keep_state))
    head_scores = torch.zeros(len(layers), heads, device=device)
    neuron_scores = torch.zeros(len(layers), neuron_masks[0].numel(), device=device)
    hidden_scores = torch.zeros(hidden, device=device)
    was_training = model.training
    model.eval()
    used = 0
    generator = torch.Generator().manual_seed(seed)
    try:
        for batch in itertools.islice(batches, max_batches):
            missing = [key for key in label_keys if key not in batch]
            if missing:
                raise ConfigError(
                    "init: pruned scores importance with the task loss: batches need the gold "
                    f"labels {list(label_keys)}"
                )
            inputs = {k: v.to(device) for k, v in model_inputs(model, batch).items()}
            n = len(layers)
            masks = [*head_masks, *neuron_masks]
            if label_keys:
                labels = {k: batch[k].to(device) for k in label_keys}
                states.clear()
                loss = model(**inputs, **labels).loss
                grads = torch.autograd.grad(loss, [*masks, *states], allow_unused=True)
                _add_scores(grads, states, n, head_scores, neuron_scores, hidden_scores, hidden)
            else:
                states.clear()
                last = model(**inputs, output_hidden_states=True).hidden_states[-1]
                keep = inputs.get("attention_mask")
                for draw in range(draws):
                    v = torch.randn(last.shape, generator=generator).to(last)
                    if keep is not None:
                        v = v * keep[..., None].to(last)
                    grads = torch.autograd.grad(
                        (last * v).sum(),
                        [*masks, *states],
                        allow_unused=True,
                        retain_graph=draw < draws - 1,
                    )
                    _add_scores(
                        grads, states, n, head_scores, neuron_scores, hidden_scores, hidden,
                        power=2, weight=1 / draws,
                    )  # fmt: skip
            used += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if used == 0:
        raise ConfigError("init: pruned got no batches of task data to score importance on")
    return Importance(
        heads=(head_scores / used).cpu(),
        neurons=(neuron_scores / used).cpu(),
        hidden=(hidden_scores / used).cpu(),
        batches=used,
    )


# ------------------------------------------------------------------------------------------
# Choosing and copying
# ------------------------------------------------------------------------------------------


def top_indices(scores: torch.Tensor, k: int) -> list[int]:
    """The ``k`` highest-scoring indices in ascending index order (ties: the lower index)."""
    order = torch.argsort(scores, descending=True, stable=True)[:k]
    return sorted(int(i) for i in order)


def plan_pruning(importance: Importance, student_config: Any, layers: list[int]) -> PruningPlan:
    """Keep the student's widths' worth of the most important units of each chosen layer."""
    teacher_heads = importance.heads.shape[1]
    teacher_hidden = importance.hidden.numel()
    head_size = teacher_hidden // teacher_heads
    heads = int(student_config.num_attention_heads)
    hidden = int(student_config.hidden_size)
    neurons = family_of(student_config).intermediate_size(student_config)
    if heads > teacher_heads or neurons > importance.neurons.shape[1] or hidden > teacher_hidden:
        raise ConfigError(
            f"init: pruned cannot widen the teacher ({heads} heads, {hidden} hidden, {neurons} "
            f"intermediate vs teacher {teacher_heads}, {teacher_hidden}, "
            f"{importance.neurons.shape[1]})"
        )
    if hidden != heads * head_size:
        raise ConfigError(
            f"init: pruned keeps whole heads of size {head_size}: {heads} heads need hidden_size "
            f"{heads * head_size}, not {hidden}"
        )
    return PruningPlan(
        layers=list(layers),
        heads=[top_indices(importance.heads[t], heads) for t in layers],
        neurons=[top_indices(importance.neurons[t], neurons) for t in layers],
        hidden=top_indices(importance.hidden, hidden),
        head_size=head_size,
    )


def _roles(family: ModelFamily, local: str) -> tuple[tuple[Role, ...], int]:
    """Per dimension of a layer parameter, its role (heads, head_index, neurons, hidden) as the
    family declares it, and how many fused blocks its first dimension holds."""
    module, _, kind = local.rpartition(".")
    sliced = family.sliced.get(module)
    if sliced is None:
        return (), 1  # LayerNorms and anything else: by size, below
    return (sliced.weight if kind == "weight" else sliced.bias), sliced.blocks


def _kept(plan: PruningPlan, role: Role, layer: int | None, blocks: int, size: int) -> list[int]:
    """Indices a dimension of ``size`` keeps; fused blocks (Q/K/V, input/gate) alike."""
    if role == "hidden":
        keep = plan.hidden
    elif role == "heads":
        keep = plan.head_rows(layer)  # type: ignore[arg-type]
    elif role == "head_index":
        keep = plan.heads[layer]  # type: ignore[index]
    else:
        keep = plan.neurons[layer]  # type: ignore[index]
    block = size // blocks
    return [b * block + i for b in range(blocks) for i in keep]


def copy_pruned_weights(
    student: nn.Module, teacher: nn.Module, plan: PruningPlan
) -> dict[str, str]:
    """Fill every student weight with the kept slice of its teacher weight.

    Returns {student key: teacher key}. Outside the attention and FFN projections, a dimension is
    hidden-indexed when it is the teacher's hidden size in the teacher and the student's in the
    student; every other dimension must already match.
    """
    _, _, family = encoder_layers(teacher)
    prefix = family.layers_prefix(teacher)
    source_state = teacher.state_dict()
    target_state = student.state_dict()
    teacher_hidden = int(teacher.config.hidden_size)
    student_hidden = int(student.config.hidden_size)
    layer_prefix = prefix + "."
    new_state: dict[str, torch.Tensor] = {}
    mapping: dict[str, str] = {}
    problems: list[str] = []
    for key, target in target_state.items():
        roles: tuple[Role, ...] = ()
        blocks = 1
        source_key, layer = key, None
        if key.startswith(layer_prefix):
            index, _, local = key[len(layer_prefix) :].partition(".")
            layer = int(index)
            source_key = f"{layer_prefix}{plan.layers[layer]}.{local}"
            roles, blocks = _roles(family, local)
        if source_key not in source_state:
            problems.append(f"{key} (no teacher weight {source_key})")
            continue
        value = source_state[source_key]
        for dim in range(value.dim()):
            role: Role | None = roles[dim] if dim < len(roles) else None
            by_size = value.shape[dim] == teacher_hidden and target.shape[dim] == student_hidden
            if role is None and by_size:
                role = "hidden"
            if role is None:
                continue
            keep = _kept(plan, role, layer, blocks if dim == 0 else 1, value.shape[dim])
            value = value.index_select(dim, torch.as_tensor(keep, device=value.device))
        if value.shape != target.shape:
            problems.append(f"{key} ({tuple(value.shape)} from teacher vs {tuple(target.shape)})")
            continue
        new_state[key] = value.clone()
        mapping[key] = source_key
    if problems:
        raise ConfigError(f"cannot slice teacher weights into the pruned student: {problems[:5]}")
    student.load_state_dict(new_state, strict=True)
    return mapping


def importance_batches(
    dataset: Any, collator: Any, batch_size: int, seed: int = 42
) -> Iterator[dict[str, torch.Tensor]]:
    """Seeded, shuffled batches of a tokenised training set for :func:`compute_importance`
    (the teacher's head is already in the task's label order, see ``Task.align_model``)."""
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collator
    )
    for batch in loader:
        yield dict(batch)
