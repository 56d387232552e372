"""``kdformer export``: a finished model folder to ONNX (and int8), checked, then measured.

The export goes to ``<model>/onnx`` (``model.onnx``, ``model_quantized.onnx``, the config and
tokenizer, ``export.json``) through a ``.partial`` folder renamed only once the ONNX outputs
match PyTorch's, so a failed or interrupted export never leaves files that look usable. When
the folder is a run's student (or a config is given), the run's report and model card are
measured again with two more rows, the ONNX and the int8 student, side by side with the
teacher and the PyTorch student on the CPU (ONNX Runtime's provider here).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from kdformer.config import ConfigError, ExperimentConfig, load_config
from kdformer.config.loading import read_yaml
from kdformer.export.onnx import (
    OnnxModel,
    agreement,
    check_opset,
    export_onnx,
    max_difference,
    onnx_size_mb,
    quantize_int8,
)
from kdformer.families import find_family, position_limit
from kdformer.features import model_inputs
from kdformer.models import count_parameters, load_model, load_tokenizer, share_files
from kdformer.pipeline.outputs import Paths, is_finished
from kdformer.tasks import Task, example_inputs

console = Console(stderr=True)

ONNX_DIR = "onnx"
FP32, INT8 = "model.onnx", "model_quantized.onnx"


def weights_digest(model_dir: Path) -> str:
    """sha256 of a folder's safetensors weights: ties an export to the weights it came from."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_class_of(model_dir: Path) -> Any:
    """The ``transformers`` class a saved folder was saved as (its config's architectures)."""
    import transformers

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for name in config.get("architectures") or []:
        if hasattr(transformers, name):
            return getattr(transformers, name)
    return transformers.AutoModel


TRACE_SHAPE = (2, 37)
"""Rows x tokens of the batch the exporter traces: a length that is no multiple of a block or
window size, which the tracer could otherwise fix into the graph (one 16-token block did)."""
CHECK_SHAPES = ((3, 9), (2, 40))
"""Rows x tokens of the batches the export is checked on: other shapes than the traced one."""


def _random_batch(
    model: torch.nn.Module,
    rows: int,
    length: int,
    generator: torch.Generator,
    task: Task | None = None,
) -> dict[str, torch.Tensor]:
    """``task``'s example inputs as ``model`` takes them, within its positions, with the
    second half of the first row padding (when the inputs have an attention mask)."""

    length = min(length, (position_limit(model.config) or 512) - 2)
    batch = example_inputs(task, model.config, rows, length, generator)
    mask = batch.get("attention_mask")
    if mask is not None:
        mask[0, length // 2 :] = 0  # a padded row
    return model_inputs(model, batch)


def trace_batch(model: torch.nn.Module, task: Task | None = None) -> dict[str, torch.Tensor]:
    """The batch the exporter traces: ``task``'s example inputs of :data:`TRACE_SHAPE`."""
    return _random_batch(model, *TRACE_SHAPE, torch.Generator().manual_seed(0), task)


def check_batches(
    model: torch.nn.Module, task: Task | None = None
) -> list[dict[str, torch.Tensor]]:
    """Inputs the export is checked on: shapes other than the traced one, with padding."""
    generator = torch.Generator().manual_seed(1)
    return [_random_batch(model, rows, length, generator, task) for rows, length in CHECK_SHAPES]


def fixed_length_of(config: Any) -> tuple[str, int] | None:
    """(family name, length) when a model of ``config`` runs at one fixed length (its family's
    rule): an exported graph, which takes any length, cannot stand for it."""
    family = find_family(config)
    if family is None:
        return None
    fixed = family.fixed_length(config, position_limit(config) or 512)
    return None if fixed is None else (family.name, fixed)


def export_model(
    model_dir: str | Path,
    quantize: bool = True,
    opset: int = 18,
    atol: float = 1e-4,
    overwrite: bool = False,
    task: Task | None = None,
) -> dict[str, Any]:
    """Export a finished model folder to ``<model_dir>/onnx``; returns what ``export.json``
    records (files, sizes, the largest difference from PyTorch, int8 agreement). ``task``:
    the run's, whose example inputs are traced and checked (a text encoder's without one)."""
    model_dir = Path(model_dir)
    if not is_finished(model_dir):
        raise ConfigError(
            f"{model_dir} is not a finished model folder (config.json and readable safetensors "
            "weights): export a distilled student, e.g. OUTPUT_DIR/student"
        )
    check_opset(opset)
    target = model_dir / ONNX_DIR
    digest = weights_digest(model_dir)
    done = export_record(model_dir)
    up_to_date = (
        done is not None
        and done.get("weights_sha256") == digest
        and quantize <= bool(done.get("quantized"))
    )
    if up_to_date and not overwrite:
        console.print(f"{target} already holds this model's export (--overwrite redoes it)")
        return done
    model_class = model_class_of(model_dir)
    model = load_model(str(model_dir), model_class).eval()
    fixed = fixed_length_of(model.config)
    if fixed is not None:
        raise ConfigError(
            f"{model_dir} is a {fixed[0]} model that runs at one fixed length ({fixed[1]} "
            "tokens), and kdformer exports graphs that take any length: distill a student with "
            "full attention or kdformer's local + global attention (convert.to: local_global), "
            "which export, or serve this one in PyTorch"
        )
    tokenizer = load_tokenizer(str(model_dir))
    trace = trace_batch(model, task)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        console.print(f"exporting {model_dir} ({model_class.__name__}) to ONNX (opset {opset})")
        outputs = export_onnx(model, trace, partial / FP32, opset)
        parameters = count_parameters(model)
        exported = OnnxModel(partial / FP32, model.config, parameters)
        batches = check_batches(model, task)
        try:
            difference = max_difference(model, exported, batches)
        except Exception as exc:  # ONNX Runtime refuses a shape the trace fixed
            raise ConfigError(
                f"the ONNX export of {model_dir} fails on inputs of other shapes than the traced "
                f"one ({str(exc).splitlines()[0][:300]}); nothing was kept. Report it with the "
                "model's config.json"
            ) from None
        if not difference <= atol:
            raise ConfigError(
                f"the ONNX export of {model_dir} differs from PyTorch by {difference:.3g} (over "
                f"--atol {atol:g}); nothing was kept. Report it with the model's config.json"
            )
        record: dict[str, Any] = {
            "source": str(model_dir),
            "model_class": model_class.__name__,
            "weights_sha256": digest,
            "parameters": parameters,
            "opset": opset,
            "inputs": list(trace),
            "outputs": outputs,
            "files": {"onnx": FP32},
            "size_mb": {"onnx": onnx_size_mb(partial / FP32)},
            "max_abs_diff": difference,
            "atol": atol,
            "quantized": quantize,
            "versions": _versions(),
        }
        if quantize:
            quantize_int8(partial / FP32, partial / INT8)
            int8 = OnnxModel(partial / INT8, model.config, parameters)
            record["files"]["onnx_int8"] = INT8
            record["size_mb"]["onnx_int8"] = onnx_size_mb(partial / INT8)
            record["int8_max_abs_diff"] = max_difference(model, int8, batches)
            record["int8_agreement"] = agreement(model, int8, batches)
        model.config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        share_files(partial)
    except BaseException:  # a failed or interrupted export leaves nothing half-made
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    console.print(
        f"wrote {target / FP32} ({record['size_mb']['onnx']:.1f} MB; largest difference from "
        f"PyTorch {difference:.2g})"
        + (
            f" and {target / INT8} ({record['size_mb']['onnx_int8']:.1f} MB"
            + (
                f"; same prediction as PyTorch at {100 * record['int8_agreement']:.1f}% of the "
                "check positions)"
                if record.get("int8_agreement") is not None
                else ")"
            )
            if quantize
            else ""
        )
    )
    return record


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def export_record(model_dir: Path) -> dict[str, Any] | None:
    """What ``export.json`` of a folder's export says, if there is one."""
    path = Path(model_dir) / ONNX_DIR / "export.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def exported_models(model_dir: Path) -> list[tuple[str, Path]]:
    """The (row suffix, file) of a folder's current export, for the report: nothing when there
    is none or it was made from other weights (a stale export is named, not measured)."""
    record_path = Path(model_dir) / ONNX_DIR / "export.json"
    record = export_record(model_dir)
    if record is None:
        return []
    if record.get("weights_sha256") != weights_digest(Path(model_dir)):
        console.print(
            f"[yellow]{record_path.parent} was exported from other weights than {model_dir}'s "
            "(left out of the report): run `kdformer export` again[/]"
        )
        return []
    names = {"onnx": "onnx", "onnx_int8": "onnx int8"}
    return [
        (names[key], record_path.parent / file)
        for key, file in record["files"].items()
        if (record_path.parent / file).is_file()
    ]


RUN_CONFIG_KEYS = frozenset({"output_dir", "task", "teacher", "student", "distill"})
"""Sections every ``config.yaml`` a run writes holds (it writes the whole resolved config)."""


def is_run_config(data: Any) -> bool:
    """Whether YAML ``data`` is a run config as kdformer writes it beside a run's teacher/ and
    student/ folders: a mapping with the experiment's main sections all there. Another tool's
    config.yaml (a training framework's, a data tool's) is not; a kdformer one with a mistake
    still is, so that loading it says what is wrong."""
    return isinstance(data, dict) and set(data) >= RUN_CONFIG_KEYS


def run_config_of(model_dir: Path) -> ExperimentConfig | None:
    """The config of the run whose student ``model_dir`` is (its ``config.yaml`` one level
    up), if it is one: ``model_dir`` is the run's ``student/`` and the ``config.yaml`` beside
    it is kdformer's (:func:`is_run_config`; another tool's is left alone). A kdformer config
    that no longer loads is an error, naming the file."""

    root = Path(model_dir).resolve().parent
    config_path = root / "config.yaml"
    if Path(model_dir).resolve() != Paths(root).student or not config_path.is_file():
        return None  # e.g. a two-stage run's general/student or a one-stage comparison
    try:
        data = read_yaml(config_path)
    except ConfigError:
        return None  # not YAML kdformer wrote
    if not is_run_config(data):
        return None
    config = load_config(config_path)
    return config.model_copy(update={"output_dir": root})
