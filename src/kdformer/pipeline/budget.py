"""Will training fit? A memory estimate printed before training, and a stop when it cannot fit.

The estimate adds, in bytes:

* trainable weights (the student and the objective's projections) with their gradients and
  AdamW's two moments: 16 per parameter (fp32 master weights under mixed precision too);
* frozen teachers' weights: 4 per parameter (loaded with a teacher cache too);
* the student's activations kept for the backward pass, per layer ``b*s*(34*h + 5*a*s)``
  bytes at 16 bits (Korthikanti et al., 2022, "Reducing activation recomputation in large
  transformer models"), doubled without mixed precision, plus its outputs (logits, their
  softmax and gradient);
* each teacher's forward without gradients: one layer's activations at a time plus every
  hidden state kept for the knowledge terms and its outputs; nothing with a teacher cache,
  whose batches are read from disk (memory-mapped; the fill checks the disk's free space).

Parameter counts are exact (the models are built on the ``meta`` device, which allocates
nothing); output sizes come from a ``meta`` forward of the task's example inputs. The
activation term is an estimate of what PyTorch keeps; allocator slack, the data loader and the
interpreter are left out, so the stop fires only when the estimate alone is over what the
device has free.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kdformer.config import ConfigError
from kdformer.distributed import is_main, training_device
from kdformer.features import model_inputs
from kdformer.tasks import Task, example_inputs

GiB = 2**30


@dataclass
class MemoryEstimate:
    trainable_bytes: int
    teacher_bytes: int
    activation_bytes: int
    teacher_forward_bytes: int
    device: str
    available_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return (
            self.trainable_bytes
            + self.teacher_bytes
            + self.activation_bytes
            + self.teacher_forward_bytes
        )

    def line(self) -> str:
        parts = (
            f"memory estimate: {_gib(self.total_bytes)} on {self.device} (trainable weights, "
            f"gradients and AdamW {_gib(self.trainable_bytes)}; teachers {_gib(self.teacher_bytes)}; "
            f"student activations {_gib(self.activation_bytes)}; teacher forward "
            f"{_gib(self.teacher_forward_bytes)})"
        )
        if self.available_bytes is not None:
            parts += f"; {_gib(self.available_bytes)} free"
        return parts


def _gib(value: int) -> str:
    return f"{value / GiB:.2f} GiB" if value >= GiB / 10 else f"{value / 2**20:.0f} MiB"


def with_head(config: Any, model_kwargs: dict[str, Any]) -> Any:
    """A copy of a model config with the task's head settings (``Task.model_kwargs``; the
    loss's ``problem_type`` left out), so models built from it have the task's outputs."""
    config = copy.deepcopy(config)
    config.update({k: v for k, v in model_kwargs.items() if k != "problem_type"})
    return config


def meta_model(model_class: Any, config: Any) -> torch.nn.Module:
    """``model_class`` of ``config`` on the meta device: shapes without memory."""
    build = getattr(model_class, "from_config", None) or model_class._from_config  # Auto or not
    with torch.device("meta"):
        return build(config)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_numel(model: torch.nn.Module, batch: int, length: int, task: Task | None = None) -> int:
    """Elements of a model's default outputs for ``task``'s example inputs of ``batch`` x
    ``length`` (meta forward); 0 when the model does not run on the meta device. The attention
    mask is left out: a model reads its values (which the meta device has not), and the example
    inputs have no padding, which is what no mask means."""
    inputs = model_inputs(model, example_inputs(task, model.config, batch, length))
    meta = {k: v.to("meta") for k, v in inputs.items() if k != "attention_mask"}
    try:
        with torch.no_grad():
            out = model(**meta, return_dict=True)
    except Exception:  # a model whose forward reads values (not only shapes)
        return 0
    return sum(v.numel() for v in out.values() if isinstance(v, torch.Tensor))


def layer_activation_bytes(config: Any, batch: int, length: int, half: bool) -> int:
    """Activations one encoder layer keeps for backward (Korthikanti et al.'s count)."""
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    bytes16 = batch * length * (34 * hidden + 5 * heads * length)
    return bytes16 if half else 2 * bytes16


def available_bytes(device: torch.device) -> int | None:
    """Free memory of the training device: CUDA's free memory, or the host's available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with accelerate; without it nothing is checked
        return None


def estimate_training_memory(
    model_class: Any,
    student_config: Any,
    teacher_configs: list[Any],
    objective: torch.nn.Module | None,
    batch: int,
    length: int,
    hidden_layers_kept: int,
    mixed_precision: str,
    device: torch.device,
    cached: bool = False,
    task: Task | None = None,
) -> MemoryEstimate:
    """The estimate for training ``student_config`` against frozen ``teacher_configs`` (none
    for fine-tuning) on ``batch`` x ``length`` inputs (``task``'s example inputs size the
    outputs); ``hidden_layers_kept``: teacher hidden states the knowledge terms read;
    ``cached``: the teachers' outputs come from the cache."""
    half = mixed_precision != "no"
    student = meta_model(model_class, student_config)
    trainable = count(student) + (count(objective) if objective is not None else 0)
    layers = int(student_config.num_hidden_layers)
    out = output_numel(student, batch, length, task)
    activations = layers * layer_activation_bytes(student_config, batch, length, half)
    activations += 3 * 4 * out + 4 * batch * length * int(student_config.hidden_size)
    teachers = teacher_forward = 0
    for config in teacher_configs:
        teacher = meta_model(model_class, config)
        teachers += 4 * count(teacher)
        if not cached:
            one_layer = layer_activation_bytes(config, batch, length, half)
            kept = 4 * batch * length * int(config.hidden_size) * (hidden_layers_kept + 1)
            teacher_forward += one_layer + kept + 4 * output_numel(teacher, batch, length, task)
    return MemoryEstimate(
        trainable_bytes=16 * trainable,
        teacher_bytes=teachers,
        activation_bytes=activations,
        teacher_forward_bytes=teacher_forward,
        device=str(device),
        available_bytes=available_bytes(device),
    )


def fits(estimate: MemoryEstimate) -> bool:
    return estimate.available_bytes is None or estimate.total_bytes <= estimate.available_bytes


def check_fits(estimate: MemoryEstimate, setting: str, batch: int) -> None:
    """ConfigError, before training, when the estimate is over what the device has free;
    names what to lower."""
    if not fits(estimate):
        raise ConfigError(
            f"training will not fit: {estimate.line()}. Lower {setting}.batch_size (now {batch}; "
            f"activations scale with it) and raise gradient_accumulation_steps to keep the "
            "effective batch, lower task.max_length, use mixed_precision on a GPU, turn on the "
            f"teacher cache (distill.cache), or a smaller student; {setting}.memory_check: "
            "false tries anyway"
        )


def report_and_check(
    task: Task,
    student_config: Any,
    teacher_configs: list[Any],
    objective: torch.nn.Module | None,
    train: Any,
    setting: str,
    length: int,
    hidden_layers_kept: int = 0,
    cached: bool = False,
    longest_input: Callable[[], int] | None = None,
) -> MemoryEstimate:
    """Print the estimate for one training stage of ``task`` (its model class, head and example
    inputs) and stop when it cannot fit (unless the stage's ``memory_check`` is off).

    ``length`` is the worst case (every batch at ``task.max_length``). Where batches pad to
    their own longest input, ``longest_input`` gives the longest training input: when the worst
    case does not fit, it is measured (one pass of the tokenizer, paid only then) and the
    estimate redone at that length, so short training data read with a long ``max_length``
    (SQuAD paragraphs with 2,048-token windows for long evaluation) is not refused."""
    from rich.console import Console

    model_kwargs = task.model_kwargs()

    def estimate_at(tokens: int) -> MemoryEstimate:
        return estimate_training_memory(
            task.model_class,
            with_head(student_config, model_kwargs),
            [with_head(c, model_kwargs) for c in teacher_configs],
            objective,
            train.batch_size,
            tokens,
            hidden_layers_kept,
            train.mixed_precision,
            training_device(),
            cached,
            task,
        )

    estimate = estimate_at(length)
    note = ""
    if longest_input is not None and not fits(estimate):
        longest = longest_input()
        if 0 < longest < length:
            estimate = estimate_at(longest)
            note = f" (at the longest training input, {longest} tokens)"
    if is_main():
        Console(stderr=True).print(f"{setting}: {estimate.line()}{note}", soft_wrap=True)
    if train.memory_check:
        check_fits(estimate, setting, train.batch_size)
    return estimate
