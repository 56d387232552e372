"""Peak memory of inference, measured in a fresh process.

Resident memory is a process-wide figure, so each (model, length) runs alone: the child imports
its libraries, reads its resident memory (the baseline), loads the model and the inputs (the
task's example inputs, :meth:`kdformer.tasks.Task.example_inputs`, made by the parent and
handed over in a file), reads it again, runs one forward and reports its peak (``VmHWM`` of
``/proc/self/status``) minus each reading: ``total_mib`` is what serving the model costs
(weights + the forward's activations and workspace), ``forward_mib`` the forward alone. The interpreter and libraries
are left out of both. (``ru_maxrss`` is not used: it keeps the parent's peak across fork +
exec.) A model class ``onnx`` runs an ONNX file with ONNX Runtime. Linux only; elsewhere the
figures are None.

    python -m kdformer.report.memory MODEL MODEL_CLASS LENGTH INPUTS
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from kdformer.export.onnx import OnnxModel
from kdformer.families import find_family
from kdformer.features import model_inputs
from kdformer.models import load_model
from kdformer.tasks import Task, example_inputs

STATUS = Path("/proc/self/status")


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{STATUS} has no {field}")


def forward_peak_mib(
    model_dir: str | Path, model_class: str, length: int, batch: int = 1, task: Task | None = None
) -> float | None:
    """MiB one forward of ``batch`` x ``length`` tokens adds to a fresh process's memory."""
    peaks = inference_peak_mib(model_dir, model_class, length, batch, task)
    return None if peaks is None else peaks["forward_mib"]


def inference_peak_mib(
    model_dir: str | Path,
    model_class: str,
    length: int,
    batch: int = 1,
    task: Task | None = None,
) -> dict[str, float] | None:
    """``total_mib`` (weights + one forward of ``batch`` x ``length`` tokens of ``task``'s
    example inputs) and ``forward_mib`` (the forward alone) of a model in a fresh process;
    None off Linux."""
    if not STATUS.exists():
        return None
    inputs = example_inputs(task, _config(str(model_dir), model_class), batch, length)
    with tempfile.TemporaryDirectory(prefix="kdformer-memory-") as folder:
        path = Path(folder) / "inputs.pt"
        torch.save(inputs, path)
        command = [sys.executable, "-m", "kdformer.report.memory", str(model_dir), model_class,
                   str(length), str(path)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"memory measurement of {model_dir} at {length} failed: {done.stderr[-800:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _config(model_dir: str, model_class: str) -> Any:
    """The model's config (an ONNX file's is its folder's, as :func:`_load` reads it)."""
    import transformers

    folder = Path(model_dir).parent if model_class == "onnx" else Path(model_dir)
    return transformers.AutoConfig.from_pretrained(str(folder))


def _load(model_dir: str, model_class: Any) -> torch.nn.Module:
    import transformers

    if model_class is OnnxModel:
        config = transformers.AutoConfig.from_pretrained(str(Path(model_dir).parent))
        return OnnxModel(model_dir, config, 0)
    return load_model(model_dir, model_class).eval()


def _main(model_dir: str, model_class: str, length: int, inputs_file: str) -> None:
    # Libraries and the model class are imported before the baseline: they are left out.
    import transformers

    if model_class == "onnx":
        import onnxruntime  # noqa: F401

        cls: Any = OnnxModel
    else:
        cls = getattr(transformers, model_class)
    baseline = status_kib("VmRSS")
    model = _load(model_dir, cls)
    family = find_family(model) if model_class != "onnx" else None
    if family is not None:
        family.set_length(model, length)
    inputs = model_inputs(model, torch.load(inputs_file))
    before = status_kib("VmRSS")
    with torch.inference_mode():
        model(**inputs)
    peak = status_kib("VmHWM")
    print(
        json.dumps({"total_mib": (peak - baseline) / 1024, "forward_mib": (peak - before) / 1024})
    )


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
