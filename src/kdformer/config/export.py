"""ONNX export of the student once it is distilled."""

from __future__ import annotations

from pydantic import Field

from kdformer.config.base import Section


class ExportConfig(Section):
    """Export the student to ONNX once it is distilled (``kdformer export`` does it later)."""

    enabled: bool = Field(False, description="Write <student>/onnx before the report.")
    quantize: bool = Field(True, description="Also write int8 dynamic quantisation.")
    opset: int = Field(18, ge=14, description="ONNX opset.")
    atol: float = Field(
        1e-4, gt=0, description="Largest output difference from PyTorch the export may have."
    )
