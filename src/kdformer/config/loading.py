"""Loading: YAML files, ``key.sub=value`` overrides and validation into config objects, with
errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdformer.config.base import ConfigError
from kdformer.config.experiment import ExperimentConfig
from kdformer.config.messages import (
    format_validation_error,
    other_task_owner,
    section_class,
    suggest_key,
    tagged_class,
)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last silently: a second ``distill:`` would drop the first without a word)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"key '{key}' is given twice in one mapping (lines {seen[key]} and {line}); YAML "
                "would keep only the second. Merge them into one"
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Path) -> Any:
    """A YAML file's data; a clear error for invalid YAML or a key given twice, naming the
    file (and the lines)."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a','b'], parsed value). Values are YAML: 3, 0.5, true, [1,2], null."""
    if "=" not in text:
        raise ConfigError(
            f"override '{text}' must look like key.sub=value, e.g. distill.train.epochs=1"
        )
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}' has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from exc
    return parts, value


def apply_overrides(
    data: dict[str, Any], overrides: list[str], root: type[BaseModel] = ExperimentConfig
) -> dict[str, Any]:
    """Set each ``key.sub=value`` in ``data``; unknown keys fail with the closest valid key."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        model: type[BaseModel] | None = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override '{text}': '{part}' is not an index of a {len(node)}-item list"
                    )
                index = int(part)
                item = node[index]
                if last:
                    node[index] = value
                else:
                    model = (
                        tagged_class(str(item.get("type", ""))) if isinstance(item, dict) else None
                    )
                    node = item
                continue
            if model is not None and part not in model.model_fields:
                dotted = ".".join(parts[: depth + 1])
                other = other_task_owner(part, model)
                if other is not None:
                    raise ConfigError(
                        f"override '{text}': '{dotted}' is a field of task type '{other}', not "
                        f"of '{model.model_fields['type'].default}'; set task.type={other} first"
                    )
                raise ConfigError(
                    f"override '{text}': unknown key '{dotted}'{suggest_key(model, part)}"
                )
            field = model.model_fields[part] if model is not None else None
            switched = _switched_section(field)
            if last:
                if switched and isinstance(value, bool) and isinstance(node.get(part), dict):
                    node[part] = {**node[part], "enabled": value}  # keep its other fields
                else:
                    node[part] = value
                break
            if switched and isinstance(node.get(part), bool):
                node[part] = {"enabled": node[part]}  # `cache=true` then `cache.dir=...`
            elif not isinstance(node.get(part), (dict, list)):
                node[part] = _default_data(field)
            node = node[part]
            model = section_class(field.annotation, node) if field is not None else None
    return data


def _switched_section(field: Any) -> bool:
    """Whether a field is a section with an ``enabled`` switch that ``true``/``false`` stands
    for (``distill.cache: true``, ``export: false``), so overrides of the shorthand and of
    the section's fields combine instead of replacing each other."""
    if field is None:
        return False
    cls = section_class(field.annotation, {})
    return cls is not None and "enabled" in cls.model_fields


def _default_data(field: Any) -> Any:
    """The plain-data form of a field's default, so overrides can reach inside it (e.g. the
    default knowledge list); ``{}`` where there is nothing to reach into."""
    if field is None or field.is_required():
        return {}
    default = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(default, BaseModel):
        return default.model_dump(mode="json", exclude_unset=True)
    if isinstance(default, list):
        return [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in default]
    return {}


def read_run_config(path: Path, blank: str | None = None) -> dict[str, Any]:
    """A run config file's sections as data. An empty file (or one of comments only) is
    refused unless ``blank`` is None: read as every default, it would distil minilm-l6 on SST-2
    from the hub, which is never what its author meant (a file not yet saved, the wrong file).
    ``blank``: how to start from the defaults instead, for the message."""
    loaded = read_yaml(path)
    if loaded is None and blank is not None:
        raise ConfigError(
            f"{path} is empty (no settings, or comments only): a run config names at least its "
            "task and teacher. Start from configs/demo.yaml or configs/tasks/, or see `kdformer "
            f"config fields`; {blank}"
        )
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections at the top level")
    return loaded


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    cls: type[BaseModel] = ExperimentConfig,
) -> Any:
    """Read a YAML file (or start from defaults), apply overrides and validate into ``cls``."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        source = str(path)
        blank = "to start from the defaults, give the settings as key.sub=value overrides"
        data = read_run_config(path, None if overrides else blank)
    data = apply_overrides(data, list(overrides or []), cls)
    if overrides:
        source += " with overrides " + " ".join(overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls, source)) from None


def dump_config(config: BaseModel) -> str:
    """YAML text of a config, loadable again by :func:`load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def load_section_file(path: str | Path, cls: type[BaseModel], what: str) -> Any:
    """Read a YAML file holding one ``cls`` (a study, a review) and validate it, with errors
    that name the file; ``what`` lists its main keys for the not-a-mapping error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{cls.__name__.removesuffix('Config').lower()} file not found: {path}")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping ({what})")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls, str(path))) from None
