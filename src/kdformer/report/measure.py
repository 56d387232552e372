"""Measuring a model: task metrics, parameters, size on disk and latency.

Latency is the median wall time of a forward pass over a fixed batch (the task's example inputs,
:meth:`kdformer.tasks.Task.example_inputs`: ``batch_size`` x ``seq_length`` real tokens, no
padding), after warm-up, in inference mode; throughput is
examples per second at that median. Quote medians and ratios measured in one run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdformer.config import ConfigError, ReportConfig
from kdformer.devices import resolve_device
from kdformer.export.onnx import OnnxModel, onnx_size_mb
from kdformer.families import find_family, intermediate_size_of, position_limit
from kdformer.features import model_inputs
from kdformer.models import count_parameters, non_finite_parameters
from kdformer.report.memory import inference_peak_mib
from kdformer.tasks import Task, example_inputs
from kdformer.tasks.evaluation import evaluate_model


@dataclass
class ModelMeasurement:
    name: str
    path: str | None
    metrics: dict[str, float]
    parameters: int
    size_mb: float | None
    latency_ms: float
    latency_p90_ms: float
    throughput: float
    shape: dict[str, int] = field(default_factory=dict)
    memory_mib: float | None = None
    """Peak resident memory of serving the model (weights + one forward of the latency batch),
    measured in a fresh process on the CPU; None when not measured."""
    export: dict[str, Any] | None = None
    """For an exported model: its file, runtime and difference from the PyTorch model."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(
        cls,
        name: str,
        model: torch.nn.Module,
        metrics: dict[str, float],
        speed: dict[str, float],
        path: str | Path | None = None,
    ) -> ModelMeasurement:
        """Combine measured metrics and speed with what the model itself tells (an exported
        model tells its parameter count as ``parameter_count``)."""

        config = model.config
        return cls(
            name=name,
            path=str(path) if path is not None else None,
            metrics=metrics,
            parameters=getattr(model, "parameter_count", None) or count_parameters(model),
            size_mb=size_on_disk_mb(path),
            shape={
                "layers": config.num_hidden_layers,
                "hidden": config.hidden_size,
                "heads": config.num_attention_heads,
                "intermediate": intermediate_size_of(config),
            },
            **speed,
        )


def check_latency_length(seq_length: int, model_config: Any, model_name: str) -> None:
    """Refuse a latency length over a model's positions before any model is scored: timing
    comes last, and such a batch fails there with a tensor-size error."""
    limit = position_limit(model_config)
    if limit is not None and seq_length > limit:
        raise ConfigError(
            f"the latency batch's length {seq_length} (report.latency_seq_length; "
            f"--latency-seq-length of kdformer evaluate) is over the position limit of "
            f"'{model_name}' ({limit} tokens): set it to at most {limit}"
        )


def latency_inputs(
    model: torch.nn.Module,
    batch_size: int,
    seq_length: int,
    device: torch.device,
    task: Task | None = None,
) -> dict[str, torch.Tensor]:
    """The batch a model is timed on: its task's example inputs (no padding), the entries its
    forward takes, on ``device``."""
    batch = example_inputs(task, model.config, batch_size, seq_length)
    return {k: v.to(device) for k, v in model_inputs(model, batch).items()}


@torch.inference_mode()
def measure_latencies(
    models: list[torch.nn.Module],
    batch_size: int,
    seq_length: int,
    repeats: int,
    warmup: int,
    device: torch.device,
    task: Task | None = None,
) -> list[dict[str, float]]:
    """Median and 90th-percentile ms per forward pass, and examples per second, for each model,
    on ``task``'s example inputs (a text encoder's without a task).

    Models are timed round-robin (one pass of each per round) so that all of them see the same
    machine state; timing one model after another favours whichever runs later.
    """
    from transformers import PreTrainedModel

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    inputs = []
    restore = []
    for model in models:
        model.eval().to(device)
        inputs.append(latency_inputs(model, batch_size, seq_length, device, task))
        family = find_family(model) if isinstance(model, PreTrainedModel) else None
        if family is not None:  # a fixed-length model (Nyströmformer) is timed at this length
            previous = family.set_length(model, seq_length)
            if previous is not None:
                restore.append((family, model, previous))
    try:
        return _timed(models, inputs, repeats, warmup, sync, batch_size)
    finally:
        for family, model, previous in restore:
            family.set_length(model, previous)


def _timed(
    models: list[torch.nn.Module],
    inputs: list[dict[str, torch.Tensor]],
    repeats: int,
    warmup: int,
    sync: Any,
    batch_size: int,
) -> list[dict[str, float]]:
    for _ in range(warmup):
        for model, batch in zip(models, inputs):
            model(**batch)
    sync()
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for i, (model, batch) in enumerate(zip(models, inputs)):
            start = time.perf_counter()
            model(**batch)
            sync()
            times[i].append((time.perf_counter() - start) * 1000)
    results = []
    for samples in times:
        median = statistics.median(samples)
        ordered = sorted(samples)
        p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
        results.append(
            {
                "latency_ms": median,
                "latency_p90_ms": p90,
                "throughput": batch_size / (median / 1000),
            }
        )
    return results


def measure_latency(
    model: torch.nn.Module,
    batch_size: int,
    seq_length: int,
    repeats: int,
    warmup: int,
    device: torch.device,
    task: Task | None = None,
) -> dict[str, float]:
    """Latency of a single model (see :func:`measure_latencies`)."""
    return measure_latencies([model], batch_size, seq_length, repeats, warmup, device, task)[0]


def size_on_disk_mb(path: str | Path | None) -> float | None:
    """Size of the weight files (safetensors) in a saved model folder, or of an ONNX file."""
    if path is not None and Path(path).suffix == ".onnx" and Path(path).is_file():
        return onnx_size_mb(path)
    if path is None or not Path(path).is_dir():
        return None
    files = list(Path(path).glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) / 2**20 if files else None


def check_finite(model: torch.nn.Module, name: str) -> None:
    """Refuse to score a model with NaN or infinite weights (a diverged run's)."""

    bad = non_finite_parameters(model)
    if bad:
        raise ConfigError(
            f"model '{name}' has non-finite weights (e.g. {bad}); it cannot be scored. It comes "
            "from a diverged training run: retrain it with a lower learning rate"
        )


def measure_loaded(
    named: list[tuple[str, torch.nn.Module, Any, str | Path | None]],
    task: Task,
    examples: Any,
    report: ReportConfig,
    eval_batch_size: int = 128,
    known: dict[str, dict[str, float]] | None = None,
    pad_to: int | None = None,
) -> list[ModelMeasurement]:
    """Metrics and cost of several (name, model, tokenizer, folder) side by side on
    ``report.device``; ``examples`` is the task's raw eval split, tokenised per tokenizer.
    ``known``: metrics already measured for some names (not evaluated again); ``pad_to``: the
    run's one batch length, when its models' family needs one."""
    device = resolve_device(report.device)
    metrics = []
    for name, model, tokenizer, _ in named:
        check_finite(model, name)
        if known and name in known:
            metrics.append(known[name])
            continue
        metrics.append(
            evaluate_model(
                model,
                task,
                examples,
                tokenizer,
                eval_batch_size,
                device,
                f"evaluate {name}",
                pad_to=pad_to,
            )  # fmt: skip
        )
    speeds = measure_latencies(
        [m for _, m, _, _ in named],
        report.latency_batch_size,
        report.latency_seq_length,
        report.latency_repeats,
        report.latency_warmup,
        device,
        task,
    )
    measured = [
        ModelMeasurement.of(name, model, values, speed, path)
        for (name, model, _, path), values, speed in zip(named, metrics, speeds)
    ]
    if report.memory:
        for measurement, (_, model, _, path) in zip(measured, named):
            measurement.memory_mib = serving_memory_mib(model, path, report, task)
    return measured


def serving_memory_mib(
    model: torch.nn.Module, path: str | Path | None, report: ReportConfig, task: Task | None = None
) -> float | None:
    """Peak resident MiB of serving a saved model (weights + one forward of the latency
    batch, ``task``'s example inputs), in a fresh process (:mod:`kdformer.report.memory`);
    None for a model that is not saved in a folder or ONNX file, or off Linux."""

    if path is None:
        return None
    kind = "onnx" if isinstance(model, OnnxModel) else type(model).__name__
    peaks = inference_peak_mib(
        path, kind, report.latency_seq_length, report.latency_batch_size, task
    )
    return None if peaks is None else peaks["total_mib"]
