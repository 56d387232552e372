"""Configuration: pydantic sections, one module per thing they configure, assembled into
:class:`ExperimentConfig`. The single source of truth for YAML files, CLI overrides and Python.

Every section forbids unknown keys, so a misspelt key fails at load time with the closest valid
key suggested (:func:`load_config`). Nothing in this package imports torch, transformers or
datasets (an import-linter contract keeps it so): validating a config and ``kdformer --help``
stay fast. Each config class that stands for code (a task, a knowledge term) names that code by
its import path, and the registries in :mod:`.tasks` and :mod:`.knowledge` are the one place a
new kind is listed.
"""

from kdformer.config.base import ConfigError, DataError, Section
from kdformer.config.cache import TeacherCacheConfig, default_cache_dir
from kdformer.config.convert import ConvertConfig
from kdformer.config.distill import DistillConfig, GeneralConfig
from kdformer.config.experiment import ExperimentConfig
from kdformer.config.export import ExportConfig
from kdformer.config.knowledge import KNOWLEDGE_CONFIGS, KnowledgeConfig
from kdformer.config.loading import (
    apply_overrides,
    dump_config,
    load_config,
    load_section_file,
    parse_override,
)
from kdformer.config.model import ExtraTeacherConfig, ModelConfig
from kdformer.config.reference import describe_fields
from kdformer.config.report import ReportConfig
from kdformer.config.student import StudentConfig, VocabularyConfig
from kdformer.config.tasks import TASK_CONFIGS, TaskConfig, TaskSection
from kdformer.config.train import TrainConfig

__all__ = [
    "KNOWLEDGE_CONFIGS",
    "TASK_CONFIGS",
    "ConfigError",
    "ConvertConfig",
    "DataError",
    "DistillConfig",
    "ExperimentConfig",
    "ExportConfig",
    "ExtraTeacherConfig",
    "GeneralConfig",
    "KnowledgeConfig",
    "ModelConfig",
    "ReportConfig",
    "Section",
    "StudentConfig",
    "TaskConfig",
    "TaskSection",
    "TeacherCacheConfig",
    "TrainConfig",
    "VocabularyConfig",
    "apply_overrides",
    "default_cache_dir",
    "describe_fields",
    "dump_config",
    "load_config",
    "load_section_file",
    "parse_override",
]
