"""The configuration reference: every documented field with its type, default and meaning
(``kdformer config fields``, ``docs/config.md``)."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel

from kdformer.config.messages import section_class
from kdformer.config.tasks import TASK_CONFIGS


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every documented field, recursively."""
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if _is_task_union(field.annotation):  # a tagged union: one block of rows per task type
            rows.append(
                (key, " | ".join(TASK_CONFIGS), "type classification", field.description or "")
            )
            for kind, cls in TASK_CONFIGS.items():
                rows.extend(
                    (f"{k} [{kind}]", t, d, text)
                    for k, t, d, text in describe_fields(cls, prefix=f"{key}.")
                )
            continue
        sub = section_class(field.annotation)
        type_name = _type_name(field.annotation)
        if field.default_factory is not None:
            try:
                default = field.default_factory()  # type: ignore[call-arg]
            except TypeError:
                default = "..."
        else:
            default = field.default
        if isinstance(default, BaseModel):
            default = "(section)"
        elif isinstance(default, Path):
            default = str(default)
        shown = "required" if field.is_required() else repr(default)
        rows.append((key, type_name, shown, field.description or ""))
        if sub is not None and name != "knowledge":
            rows.extend(describe_fields(sub, prefix=f"{key}."))
    return rows


def _is_task_union(annotation: Any) -> bool:
    """Whether an annotation is the tagged union of task sections."""
    if typing.get_origin(annotation) not in (Union, types.UnionType, typing.Annotated):
        return False
    members = {section_class(arg) for arg in typing.get_args(annotation)}
    return len(members & set(TASK_CONFIGS.values())) > 1


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("NoneType", "None")
    text = re.sub(r"\bkdformer\.config\.(?:\w+\.)*(\w+)", r"\1", text)
    return re.sub(r"Union\[([^\[\]]*)\]", lambda m: m.group(1).replace(", ", " | "), text)


def fields_under(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """The rows of :func:`describe_fields` whose key starts with ``prefix``; a ConfigError that
    names the prefix and the closest valid keys when none does."""
    from difflib import get_close_matches

    from kdformer.config.base import ConfigError

    rows = describe_fields(model)
    found = [row for row in rows if row[0].startswith(prefix)]
    if found:
        return found
    keys: list[str] = []
    for key, *_ in rows:
        parts = key.split(" [")[0].split(".")  # 'task.label_column [ner]' -> task, label_column
        for end in range(1, len(parts) + 1):
            dotted = ".".join(parts[:end])
            if dotted not in keys:
                keys.append(dotted)
    close = get_close_matches(prefix, keys, n=3, cutoff=0.5)
    if not close:  # e.g. a typo in the first part: the closest ones under the right section
        head, _, _ = prefix.partition(".")
        section = get_close_matches(head, [k for k in keys if "." not in k], n=1, cutoff=0.5)
        if section:
            close = get_close_matches(
                prefix, [k for k in keys if k.split(".")[0] == section[0]], n=3, cutoff=0.0
            )
    hint = (
        f"closest: {', '.join(close)}"
        if close
        else "sections: " + ", ".join(k for k in keys if "." not in k)
    )
    raise ConfigError(f"no config field starts with '{prefix}'; {hint}")
