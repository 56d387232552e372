"""Error messages for bad configuration: each names the bad key, the closest valid one, or the
task type a misplaced key belongs to."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from kdformer.config.knowledge import KNOWLEDGE_CONFIGS
from kdformer.config.tasks import TASK_CONFIGS, task_type


def section_class(annotation: Any, data: Any = None) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``TrainConfig | None``; for a tagged
    union (the task section) the member ``data`` selects, by its ``type`` or ``name``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, typing.Annotated):
        members = [section_class(arg) for arg in typing.get_args(annotation)]
        members = [m for m in members if m is not None]
        tagged = [m for m in members if m in TASK_CONFIGS.values()]
        if tagged and isinstance(data, dict):
            return TASK_CONFIGS.get(task_type(data), tagged[0])
        return members[0] if members else None
    return None


def tagged_class(type_name: str) -> type[BaseModel] | None:
    """The config class of a union tag: a knowledge type or a task type."""
    return KNOWLEDGE_CONFIGS.get(type_name) or TASK_CONFIGS.get(type_name)


def other_task_owner(key: str, current: type[BaseModel] | None) -> str | None:
    """The task type whose section has ``key``, when ``current`` (a task section) lacks it."""
    if current not in TASK_CONFIGS.values():
        return None
    for kind, cls in TASK_CONFIGS.items():
        if cls is not current and key in cls.model_fields:
            return kind
    return None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk a pydantic error location down to the model class that owns its last key."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        if part in model.model_fields:
            model = section_class(model.model_fields[part].annotation)
        else:  # a discriminated-union tag such as 'logits' or 'ner'
            model = tagged_class(str(part))
    return model


def suggest_key(model: type[BaseModel] | None, key: str) -> str:
    """' (did you mean 'x'?)' for the valid key closest to ``key``, or the list of valid keys."""
    if model is None:
        return ""
    valid = list(model.model_fields)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid keys: {', '.join(valid)})"


def format_validation_error(error: ValidationError, root: type[BaseModel], source: str) -> str:
    """Turn a pydantic error into lines that name each bad key and how to fix it."""
    lines = [f"Invalid configuration in {source}:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in loc if not (isinstance(p, str) and _is_tag(root, loc, p)))
        if item["type"] == "extra_forbidden":
            owner = _model_at(root, loc[:-1])
            other = other_task_owner(str(loc[-1]), owner)
            if other is not None:
                this = owner.model_fields["type"].default
                lines.append(
                    f"  - '{dotted}' is a field of task type '{other}', not of '{this}': remove "
                    f"it, or set task.type: {other}"
                )
            else:
                lines.append(f"  - unknown key '{dotted}'{suggest_key(owner, str(loc[-1]))}")
        else:
            lines.append(f"  - {dotted or '(top level)'}: {item['msg']}")
    return "\n".join(lines)


def _is_tag(root: type[BaseModel], loc: tuple[Any, ...], part: str) -> bool:
    """True when ``part`` in ``loc`` is a union tag pydantic inserted, not a user key."""
    index = loc.index(part)
    owner = _model_at(root, loc[:index])
    return owner is None or (part not in owner.model_fields and tagged_class(part) is not None)
