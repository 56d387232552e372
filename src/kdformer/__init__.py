"""kdformer: knowledge distillation for transformer language models.

The core (knowledge terms, layer matching, student building, the objective) works from a plain
PyTorch loop; :class:`kdformer.Distiller`, :mod:`kdformer.pipeline` and the ``kdformer`` CLI are
thin layers over it. Names below load on first use, so ``import kdformer.config`` (and
``kdformer --help``) never load torch.
"""

from __future__ import annotations

from typing import Any

from kdformer.config import (
    ConfigError,
    DistillConfig,
    ExperimentConfig,
    ModelConfig,
    ReportConfig,
    StudentConfig,
    TaskConfig,
    TrainConfig,
    load_config,
)
from kdformer.config.base import import_path

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "use_local_global": "kdformer.attention:use_local_global",
    "family_of": "kdformer.families:family_of",
    "FeatureNeeds": "kdformer.features:FeatureNeeds",
    "Features": "kdformer.features:Features",
    "extract_features": "kdformer.features:extract_features",
    "init_layers": "kdformer.matching:init_layers",
    "layer_pairs": "kdformer.matching:layer_pairs",
    "DistillationObjective": "kdformer.objective:DistillationObjective",
    "Distiller": "kdformer.distiller:Distiller",
    "build_student": "kdformer.students:build_student",
    "student_config": "kdformer.students:student_config",
    "LiveTeacher": "kdformer.teacher:LiveTeacher",
    "finetune": "kdformer.pipeline:finetune",
    "distill": "kdformer.pipeline:distill",
    "evaluate": "kdformer.pipeline:evaluate",
    "run": "kdformer.pipeline:run",
    "measure_models": "kdformer.pipeline:measure_models",
}
"""Public names of the torch side, by import path (PEP 562: loaded when first asked for)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = import_path(_LAZY[name])
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kdformer' has no attribute '{name}'")


__all__ = [
    "ConfigError",
    "DistillConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ReportConfig",
    "StudentConfig",
    "TaskConfig",
    "TrainConfig",
    "load_config",
    *_LAZY,
]
