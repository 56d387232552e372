"""kdformer: knowledge distillation for transformer language models.

The core (knowledge terms, layer matching, student building, the objective) works from a plain
PyTorch loop; :mod:`kdformer.pipeline` and the ``kdformer`` CLI are thin layers over it.
"""

from kdformer.attention import use_local_global  # registers kdformer's attention kernels
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
from kdformer.families import family_of
from kdformer.features import FeatureNeeds, Features, extract_features
from kdformer.matching import init_layers, layer_pairs
from kdformer.objective import DistillationObjective
from kdformer.students import build_student, student_config
from kdformer.teacher import LiveTeacher

__version__ = "0.1.0"


def __getattr__(name: str):
    """The pipeline pulls in the Trainer stack; import it only when asked for."""
    if name in {"finetune", "distill", "evaluate", "run", "measure_models"}:
        from kdformer import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)


__all__ = [
    "use_local_global",
    "ConfigError",
    "DistillConfig",
    "DistillationObjective",
    "ExperimentConfig",
    "FeatureNeeds",
    "Features",
    "LiveTeacher",
    "ModelConfig",
    "ReportConfig",
    "StudentConfig",
    "TaskConfig",
    "TrainConfig",
    "build_student",
    "distill",
    "evaluate",
    "extract_features",
    "family_of",
    "finetune",
    "init_layers",
    "layer_pairs",
    "load_config",
    "measure_models",
    "run",
    "student_config",
]
