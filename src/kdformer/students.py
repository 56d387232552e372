"""Shaping and initialising the student.

The student's config is the teacher's with shape overrides (so it keeps the teacher's vocabulary,
position range, label names and architecture); named presets give the BERT miniature shapes
(Turc et al., 2019) or a depth relative to the teacher.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch

from kdformer.config import ConfigError, StudentConfig
from kdformer.matching import init_layers

#: BERT miniatures: (layers, hidden, heads, intermediate).
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "medium": (8, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}
#: Depth relative to the teacher, width kept (DistilBERT-style students).
RELATIVE_PRESETS: dict[str, int] = {"half": 2, "third": 3, "quarter": 4}

SHAPE_FIELDS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")
_CONFIG_KEYS = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
}
_LAYER_KEY = re.compile(r"^(.*?\.(?:layer|layers))\.(\d+)\.(.*)$")


def student_shape(teacher_config: Any, cfg: StudentConfig) -> dict[str, int]:
    """Resolve preset + explicit fields into (num_layers, hidden_size, num_heads, intermediate)."""
    shape = {k: getattr(teacher_config, v) for k, v in _CONFIG_KEYS.items()}
    if cfg.preset is not None:
        if cfg.preset in PRESETS:
            shape = dict(zip(SHAPE_FIELDS, PRESETS[cfg.preset]))
        elif cfg.preset in RELATIVE_PRESETS:
            shape["num_layers"] = max(1, shape["num_layers"] // RELATIVE_PRESETS[cfg.preset])
        else:
            valid = ", ".join([*PRESETS, *RELATIVE_PRESETS])
            raise ConfigError(f"unknown student preset '{cfg.preset}'; valid: {valid}")
    for name in SHAPE_FIELDS:
        if getattr(cfg, name) is not None:
            shape[name] = getattr(cfg, name)
    if shape["hidden_size"] % shape["num_heads"]:
        raise ConfigError(
            f"student hidden_size {shape['hidden_size']} is not divisible by num_heads "
            f"{shape['num_heads']}"
        )
    return shape


def student_config(teacher_config: Any, cfg: StudentConfig) -> Any:
    """The teacher's config with the student's shape; checks ``init: teacher`` is possible."""
    shape = student_shape(teacher_config, cfg)
    if cfg.init == "teacher":
        teacher = {k: getattr(teacher_config, v) for k, v in _CONFIG_KEYS.items()}
        wider = [
            k for k in ("hidden_size", "num_heads", "intermediate_size") if shape[k] != teacher[k]
        ]
        if wider:
            diffs = ", ".join(f"{k} {shape[k]} vs teacher {teacher[k]}" for k in wider)
            raise ConfigError(
                f"init: teacher copies teacher weights, so the student must keep the teacher's "
                f"width ({diffs}). Keep the width and change num_layers, or use init: random"
            )
        if shape["num_layers"] > teacher["num_layers"]:
            raise ConfigError(
                f"init: teacher needs a student no deeper than the teacher ({shape['num_layers']} "
                f"> {teacher['num_layers']} layers); use fewer layers or init: random"
            )
        init_layers(cfg.init_layers, teacher["num_layers"], shape["num_layers"])  # validates
    config = copy.deepcopy(teacher_config)
    for key, value in shape.items():
        setattr(config, _CONFIG_KEYS[key], value)
    return config


def copy_teacher_layers(
    student: torch.nn.Module, teacher: torch.nn.Module, layers: list[int]
) -> dict[str, str]:
    """Copy every teacher weight into the student, student layer i taking teacher layer
    ``layers[i]``. Returns {student key: teacher key}; fails if any student weight has no source."""
    source_state = teacher.state_dict()
    target_state = student.state_dict()
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for key, value in target_state.items():
        match = _LAYER_KEY.match(key)
        source = f"{match[1]}.{layers[int(match[2])]}.{match[3]}" if match else key
        if source in source_state and source_state[source].shape == value.shape:
            mapping[key] = source
        else:
            missing.append(key)
    if missing:
        raise ConfigError(f"teacher has no weights matching student parameters {missing[:5]}")
    student.load_state_dict({k: source_state[v] for k, v in mapping.items()}, strict=True)
    return mapping


def build_student(teacher: Any, cfg: StudentConfig, model_class: Any, seed: int = 42) -> Any:
    """Build and initialise the student for ``teacher`` (a loaded transformers model)."""
    if cfg.init == "pretrained":
        from kdformer.models import load_model

        if not cfg.pretrained:
            raise ConfigError(
                "init: pretrained needs student.pretrained (a model folder or hub name)"
            )
        labels = teacher.config
        return load_model(
            cfg.pretrained,
            model_class,
            num_labels=labels.num_labels,
            id2label=labels.id2label,
            label2id=labels.label2id,
        )
    config = student_config(teacher.config, cfg)
    torch.manual_seed(seed)
    make = getattr(model_class, "from_config", None) or model_class
    student = make(config)
    if cfg.init == "teacher":
        layers = init_layers(
            cfg.init_layers, teacher.config.num_hidden_layers, config.num_hidden_layers
        )
        copy_teacher_layers(student, teacher, layers)
    return student
