"""Shaping and initialising the student.

The student's config is the teacher's with shape overrides (so it keeps the teacher's vocabulary,
position range, label names and architecture); named presets give the BERT miniature shapes
(Turc et al., 2019), a depth relative to the teacher, or a width relative to the teacher.

Initialisation: ``random``; ``teacher`` (copy embeddings, head and chosen layers; same width);
``pruned`` (chosen layers, narrowed to the most important heads, FFN neurons and hidden
dimensions, see :mod:`kdformer.pruning`); ``pretrained`` (any model folder, including a student
folder kdformer wrote, or a hub name).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from kdformer.config import ConfigError, StudentConfig
from kdformer.families import family_of, intermediate_size_of
from kdformer.matching import init_layers
from kdformer.models import load_model, prepare_family
from kdformer.pruning import compute_importance, copy_pruned_weights, plan_pruning

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
#: Width relative to the teacher, depth and head size kept: hidden size, heads and intermediate
#: size divided by the factor (the shapes ``init: pruned`` can produce).
WIDTH_PRESETS: dict[str, int] = {"half-width": 2, "third-width": 3, "quarter-width": 4}

SHAPE_FIELDS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")


def config_shape(config: Any) -> dict[str, int]:
    """(num_layers, hidden_size, num_heads, intermediate_size) of a model config; the
    feed-forward width's field name comes from the model's family (DistilBERT: hidden_dim)."""
    return {
        "num_layers": int(config.num_hidden_layers),
        "hidden_size": int(config.hidden_size),
        "num_heads": int(config.num_attention_heads),
        "intermediate_size": intermediate_size_of(config),
    }


def teacher_head_size(teacher_config: Any) -> int:
    """Width of one attention head of the teacher (hidden size / heads)."""
    return int(teacher_config.hidden_size) // int(teacher_config.num_attention_heads)


def student_shape(teacher_config: Any, cfg: StudentConfig) -> dict[str, int]:
    """Resolve preset + explicit fields into (num_layers, hidden_size, num_heads, intermediate).

    With ``init: pruned`` and ``num_heads`` unset, heads follow from the hidden size at the
    teacher's head size (pruning keeps whole heads, so hidden = heads x head size).
    """
    shape = config_shape(teacher_config)
    if cfg.preset is not None:
        if cfg.preset in PRESETS:
            shape = dict(zip(SHAPE_FIELDS, PRESETS[cfg.preset]))
        elif cfg.preset in RELATIVE_PRESETS:
            shape["num_layers"] = max(1, shape["num_layers"] // RELATIVE_PRESETS[cfg.preset])
        elif cfg.preset in WIDTH_PRESETS:
            factor = WIDTH_PRESETS[cfg.preset]
            if shape["num_heads"] % factor:
                raise ConfigError(
                    f"preset {cfg.preset} divides the teacher's {shape['num_heads']} attention "
                    f"heads by {factor}, which leaves a fraction; set student.hidden_size and "
                    "student.num_heads explicitly"
                )
            shape["hidden_size"] //= factor
            shape["num_heads"] //= factor
            shape["intermediate_size"] = max(1, shape["intermediate_size"] // factor)
        else:
            valid = ", ".join([*PRESETS, *RELATIVE_PRESETS, *WIDTH_PRESETS])
            raise ConfigError(f"unknown student preset '{cfg.preset}'; valid: {valid}")
    for name in SHAPE_FIELDS:
        if getattr(cfg, name) is not None:
            shape[name] = getattr(cfg, name)
    if cfg.init == "pruned" and cfg.num_heads is None:
        head_size = teacher_head_size(teacher_config)
        if shape["hidden_size"] % head_size:
            raise ConfigError(
                f"init: pruned keeps whole teacher heads of size {head_size}, so the student's "
                f"hidden_size must be a multiple of {head_size} (got {shape['hidden_size']})"
            )
        shape["num_heads"] = shape["hidden_size"] // head_size
    if shape["hidden_size"] % shape["num_heads"]:
        raise ConfigError(
            f"student hidden_size {shape['hidden_size']} is not divisible by num_heads "
            f"{shape['num_heads']}"
        )
    return shape


def student_config(teacher_config: Any, cfg: StudentConfig) -> Any:
    """The teacher's config with the student's shape; checks ``init: teacher`` is possible."""
    shape = student_shape(teacher_config, cfg)
    teacher = config_shape(teacher_config)
    if cfg.init == "teacher":
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
    if cfg.init == "pruned":
        check_pruned_shape(teacher_config, shape)
        init_layers(cfg.init_layers, teacher_config.num_hidden_layers, shape["num_layers"])
    # The teacher layer each student layer stands for (its per-layer settings, e.g. Longformer
    # windows, are kept): the copied layers, or for a random student its uniform spread.
    spec = cfg.init_layers if cfg.init in ("teacher", "pruned") else "uniform"
    layers = (
        init_layers(spec, teacher["num_layers"], shape["num_layers"])
        if shape["num_layers"] <= teacher["num_layers"]
        else [min(i, teacher["num_layers"] - 1) for i in range(shape["num_layers"])]
    )
    config = copy.deepcopy(teacher_config)
    family_of(teacher_config).reshape_config(config, shape, layers)
    return config


def check_pruned_shape(teacher_config: Any, shape: dict[str, int]) -> None:
    """``init: pruned`` keeps a subset of the teacher: never larger, and whole heads only."""
    teacher = config_shape(teacher_config)
    larger = [k for k in SHAPE_FIELDS if shape[k] > teacher[k]]
    if larger:
        diffs = ", ".join(f"{k} {shape[k]} > teacher {teacher[k]}" for k in larger)
        raise ConfigError(
            f"init: pruned keeps a subset of the teacher's layers, heads, neurons and hidden "
            f"dimensions, so the student cannot be larger ({diffs}); shrink it or use init: random"
        )
    head_size = teacher_head_size(teacher_config)
    if shape["hidden_size"] != shape["num_heads"] * head_size:
        raise ConfigError(
            f"init: pruned keeps whole teacher heads of size {head_size}, so hidden_size must be "
            f"num_heads x {head_size}: {shape['num_heads']} heads need hidden_size "
            f"{shape['num_heads'] * head_size}, not {shape['hidden_size']}. Leave num_heads unset "
            "to derive it from hidden_size"
        )


def copy_teacher_layers(
    student: torch.nn.Module, teacher: torch.nn.Module, layers: list[int]
) -> dict[str, str]:
    """Copy every teacher weight into the student, student layer i taking teacher layer
    ``layers[i]``. Returns {student key: teacher key}; fails if any student weight has no source."""
    prefix = family_of(student).layers_prefix(student) + "."
    source_state = teacher.state_dict()
    target_state = student.state_dict()
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for key, value in target_state.items():
        source = key
        if key.startswith(prefix):
            index, _, local = key[len(prefix) :].partition(".")
            source = f"{prefix}{layers[int(index)]}.{local}"
        if source in source_state and source_state[source].shape == value.shape:
            mapping[key] = source
        else:
            missing.append(key)
    if missing:
        raise ConfigError(f"teacher has no weights matching student parameters {missing[:5]}")
    student.load_state_dict({k: source_state[v] for k, v in mapping.items()}, strict=True)
    return mapping


def build_student(
    teacher: Any,
    cfg: StudentConfig,
    model_class: Any,
    seed: int = 42,
    data: Iterable[Mapping[str, torch.Tensor]] | None = None,
    label_keys: tuple[str, ...] = ("labels",),
) -> Any:
    """Build and initialise the student for ``teacher`` (a loaded, task-trained transformers model).

    ``data``: tokenised, collated batches with the task's gold labels under ``label_keys``
    (dicts of tensors), needed only by ``init: pruned``, which scores importance with the
    teacher's task loss on the first ``cfg.pruning_batches`` of them (with no ``label_keys``:
    the output Fisher of the teacher's last hidden state, see :mod:`kdformer.pruning`).
    """
    if cfg.init == "pruned" and data is None:
        raise ConfigError(
            "init: pruned scores the teacher's heads, neurons and hidden dimensions on task data: "
            "pass data= (batches of tokenised training examples with labels) to build_student"
        )
    if cfg.init == "pretrained":
        if not cfg.pretrained:
            raise ConfigError(
                "init: pretrained needs student.pretrained (a model folder or hub name)"
            )
        # A kdformer student folder, a general (task-less) student or any model: keep its body
        # and a head of the teacher's size with its own label names (the task then reorders or
        # resets it: Task.align_model); a head of another size is re-initialised, a missing one
        # created.
        labels = teacher.config
        extra = {"problem_type": labels.problem_type} if labels.problem_type else {}
        return load_model(
            cfg.pretrained,
            model_class,
            num_labels=labels.num_labels,
            ignore_mismatched_sizes=True,
            **extra,
        )
    config = student_config(teacher.config, cfg)
    torch.manual_seed(seed)
    make = getattr(model_class, "from_config", None) or model_class
    student = prepare_family(make(config))
    if cfg.init in ("teacher", "pruned"):
        layers = init_layers(
            cfg.init_layers, teacher.config.num_hidden_layers, config.num_hidden_layers
        )
        if cfg.init == "teacher":
            copy_teacher_layers(student, teacher, layers)
        else:
            assert data is not None
            importance = compute_importance(
                teacher, data, cfg.pruning_batches, label_keys, seed=seed
            )
            copy_pruned_weights(student, teacher, plan_pruning(importance, config, layers))
    return student
