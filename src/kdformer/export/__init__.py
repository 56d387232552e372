"""Deployable students: ONNX export checked against PyTorch, int8 dynamic quantisation, and a
module that runs the exported file so the report measures it like any model."""

from kdformer.export.onnx import (
    OnnxModel,
    agreement,
    export_onnx,
    max_difference,
    onnx_size_mb,
    output_names,
    quantize_int8,
)

__all__ = [
    "OnnxModel",
    "agreement",
    "export_onnx",
    "max_difference",
    "onnx_size_mb",
    "output_names",
    "quantize_int8",
]
