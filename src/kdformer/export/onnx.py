"""A student as ONNX: export with ``torch.onnx`` (the dynamo exporter), a check against the
PyTorch outputs, int8 dynamic quantisation with ONNX Runtime, and a module that runs an ONNX
file so the report measures it like any model.

The exported graph takes the inputs the tokenizer makes and the model's forward accepts
(``input_ids``, ``attention_mask``, ``token_type_ids``...) with dynamic batch and sequence
axes, and returns the model's outputs under their ``transformers`` names (``logits``,
``start_logits``/``end_logits``, ``last_hidden_state``...), so ``optimum``'s ORT models and
plain ``onnxruntime`` both load it.

Limits: ONNX Runtime's CPU provider (the ``onnxruntime`` package); quantisation is dynamic
(int8 weights of the matrix multiplications, activations quantised per batch at run time), so
it changes the outputs: its metric is measured, not assumed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdformer.config.base import ConfigError

#: Single-file ONNX models stop at protobuf's 2 GiB; larger graphs keep their weights beside.
EXTERNAL_DATA_BYTES = 1_800_000_000


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"ONNX export needs onnx, onnxruntime and onnxscript ({exc}): "
            "pip install 'kdformer[export]'"
        ) from None


def check_opset(opset: int) -> None:
    """Refuse, before any model loads, an opset newer than the installed ``onnx`` knows: the
    exporter cannot convert a graph to it (and used to write one ONNX Runtime cannot load)."""
    _require_onnx()
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ConfigError(
            f"opset {opset} is newer than the newest the installed onnx {onnx.__version__} "
            f"knows ({newest}): give an opset from 14 to {newest} (18, the default, is what "
            "the exporter writes natively)"
        )


def graph_opset(proto: Any) -> int | None:
    """The default-domain (ai.onnx) opset an ONNX model proto declares."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


class _Outputs(nn.Module):
    """The model with keyword inputs in a fixed order and its named outputs as a tuple (what
    the exporter traces)."""

    def __init__(self, model: nn.Module, input_names: Sequence[str], output_names: Sequence[str]):
        super().__init__()
        self.model, self.input_names, self.output_names = model, list(input_names), output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.input_names, inputs)), return_dict=True)
        return tuple(out[name] for name in self.output_names)


def output_names(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> list[str]:
    """The tensors a model returns by default (``logits``; ``start_logits``, ``end_logits``;
    ``last_hidden_state``, ``pooler_output``), read from one forward."""
    with torch.inference_mode():
        out = model(**inputs, return_dict=True)
    return [k for k, v in out.items() if isinstance(v, torch.Tensor)]


def export_onnx(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], path: str | Path, opset: int = 18
) -> list[str]:
    """Write ``model`` to ``path`` as ONNX with dynamic batch and sequence axes, traced on
    ``inputs`` (at least 2 x 2 tokens: a size of 1 would be fixed into the graph). Returns the
    output names."""
    _require_onnx()
    import onnx

    model = model.eval()
    names = list(inputs)
    outputs = output_names(model, inputs)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: length} for name in names}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
            _quiet("torch.onnx"),
        ):
            warnings.simplefilter("ignore")  # the exporter narrates every pass
            program = torch.onnx.export(
                _Outputs(model, names, outputs).eval(),
                tuple(inputs[n] for n in names),
                input_names=names,
                output_names=outputs,
                dynamic_shapes={"inputs": tuple(dynamic[n] for n in names)},
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter's errors are pages long: keep their summary
        raise ConfigError(
            f"torch.onnx could not export {type(model).__name__}: {exporter_summary(exc)}. "
            "Students with full attention (BERT, RoBERTa, DistilBERT, ...) or kdformer's local "
            "+ global attention (convert.to: local_global) export; serve this one in PyTorch"
        ) from None
    proto = program.model_proto
    written = graph_opset(proto)
    if written != opset:  # the exporter's conversion failed and left its own opset
        raise ConfigError(
            f"torch.onnx could not convert the graph of {type(model).__name__} to opset {opset} "
            f"(its version converter fails on this graph's operators and leaves it at opset "
            f"{written}), so the export would not be the opset asked for: give --opset "
            f"{written} (export.opset), or another opset the graph converts to"
        )
    # The exporter records intermediate shapes of the traced example; shape inference (which
    # quantisation runs) then disagrees with them. ONNX Runtime infers them again on load.
    del proto.graph.value_info[:]
    external = proto.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(proto, str(path), save_as_external_data=external, location=path.name + ".data")
    return outputs


def exporter_summary(exc: BaseException) -> str:
    """The line of a torch.onnx / torch.export error that says what failed (its "Exception
    summary"), without colour codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1 :]
        caused = next((line for line in after if line.startswith("Caused by")), "")
        return " ".join(part for part in (after[0] if after else "", caused) if part)
    return lines[0] if lines else type(exc).__name__


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic int8 quantisation of an ONNX file (weights of MatMul/Gemm as int8)."""
    _require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):  # a suggestion to pre-process, printed on the root logger
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from ``logger`` (the root logger for "") while the block runs."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def onnx_size_mb(path: str | Path) -> float:
    """MiB of an ONNX file and its external data, if any."""
    path = Path(path)
    files = [path, path.with_name(path.name + ".data")]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


class OnnxModel(nn.Module):
    """An ONNX file run by ONNX Runtime behind a ``transformers``-like forward: keyword tensors
    in, a dict of named output tensors out. Inputs the graph does not take are dropped; ones it
    takes but the batch lacks (``token_type_ids``) are zeros. ``config`` and ``parameter_count``
    come from the PyTorch model it was exported from, for the report."""

    def __init__(self, path: str | Path, config: Any, parameter_count: int, threads: int = 0):
        super().__init__()
        _require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.config = config
        self.parameter_count = parameter_count

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        like = next(iter(inputs.values()))
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None:
                value = torch.zeros_like(inputs["input_ids"])
            feed[name] = value.detach().cpu().to(torch.int64).numpy()
        values = self.session.run(self.output_names, feed)
        return {
            name: torch.from_numpy(v).to(like.device) for name, v in zip(self.output_names, values)
        }


def max_difference(
    model: nn.Module, exported: OnnxModel, batches: Sequence[Mapping[str, torch.Tensor]]
) -> float:
    """Largest absolute difference between the PyTorch model's and the ONNX model's outputs
    over ``batches``."""
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            reference = model(**batch, return_dict=True)
            got = exported(**batch)
            for name in exported.output_names:
                diff = (reference[name].float() - got[name].float()).abs().max().item()
                worst = max(worst, diff)
    return worst


def agreement(
    model: nn.Module, exported: OnnxModel, batches: Sequence[Mapping[str, torch.Tensor]]
) -> float | None:
    """Share of positions where the PyTorch and ONNX outputs pick the same class (argmax of the
    last axis of each ``*logits`` output, real tokens only when there is an attention mask);
    None for a model without logits (a bare encoder)."""
    names = [name for name in exported.output_names if name.endswith("logits")]
    if not names:
        return None
    same = total = 0
    with torch.inference_mode():
        for batch in batches:
            reference = model(**batch, return_dict=True)
            got = exported(**batch)
            mask = batch.get("attention_mask")
            for name in names:
                a, b = reference[name].argmax(-1), got[name].argmax(-1)
                hit = a == b
                if mask is not None and hit.shape == mask.shape:
                    hit = hit[mask.bool()]
                same += int(hit.sum())
                total += hit.numel()
    return same / max(total, 1)
