"""The sentence-transformers layout of a model folder: reading how a teacher pools and
normalises (``modules.json``, ``1_Pooling/config.json``), and writing those files beside a
saved student so that ``SentenceTransformer(folder)`` loads it as the same kind of embedding
model (plain ``AutoModel.from_pretrained(folder)`` ignores them).

The files follow the classic layout that sentence-transformers 2.x wrote and every later
version reads (the MiniLM-L6 teacher ships it); nothing here imports sentence-transformers. A
hub teacher's files come through transformers' own file cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import transformers

from kdformer.config.base import DataError

#: The Pooling config keys of the classic layout, by kdformer pooling name.
POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
}
#: Other poolings sentence-transformers has, which kdformer does not apply.
OTHER_POOLING_KEYS = {
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc


def model_source(model_config: Any) -> str | None:
    """Where a transformers config was loaded from: its local folder or hub name."""
    source = getattr(model_config, "_name_or_path", None) or getattr(
        model_config, "name_or_path", None
    )
    return str(source) if source else None


def _find(source: str, filename: str) -> Path | None:
    """``filename`` of a model folder, or of a hub model (downloaded, or from the local cache
    when offline); None when it has none."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        path = folder / filename
        return path if path.is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(
            source,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except (OSError, ValueError):  # not a hub name, or a repository that is not there
        return None
    return Path(found) if found else None


def read_embedding_layout(source: str | Path | None) -> tuple[str | None, bool | None]:
    """(pooling, normalise) as a sentence-transformers model declares them (a folder or a hub
    name): its Pooling module's mode (classic keys or the newer ``pooling_mode``) and whether a
    Normalize module follows; (None, None) for a model without ``modules.json`` (a plain
    transformers model)."""
    modules_path = _find(str(source), "modules.json") if source else None
    if modules_path is None:
        return None, None
    modules = _read_json(modules_path)
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    normalise = any(t.rsplit(".", 1)[-1] == "Normalize" for t in types)
    pooling_module = next(
        (m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")),
        None,
    )
    if pooling_module is None:
        return None, normalise
    folder = str(pooling_module.get("path", "")).strip("/")
    config_path = _find(str(source), f"{folder}/config.json" if folder else "config.json")
    if config_path is None:
        return None, normalise
    config = _read_json(config_path)
    mode = config.get("pooling_mode")
    if mode is None:
        chosen = [name for name, key in POOLING_KEYS.items() if config.get(key)]
        others = [name for key, name in OTHER_POOLING_KEYS.items() if config.get(key)]
        if others or len(chosen) > 1:
            mode = "+".join(chosen + others)
        else:
            mode = chosen[0] if chosen else None
    if mode is not None and mode not in POOLING_KEYS:
        raise DataError(
            f"{config_path} pools by '{mode}', which kdformer does not apply (it pools by mean, "
            "cls or max): set task.pooling to one of those to distil and score with it"
        )
    return mode, normalise


def write_embedding_layout(
    folder: Path, pooling: str, normalise: bool, width: int, max_length: int
) -> None:
    """Write ``modules.json`` (Transformer, Pooling and, when normalising, Normalize),
    ``1_Pooling/config.json``, ``2_Normalize/``, ``sentence_bert_config.json`` (the longest
    input, in tokens) and ``config_sentence_transformers.json`` (cosine similarity) into a saved
    model's ``folder``."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalise:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": int(width),
        **{key: name == pooling for name, key in POOLING_KEYS.items()},
        **dict.fromkeys(OTHER_POOLING_KEYS, False),
        "include_prompt": True,
    }
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": pooling_config,
        "sentence_bert_config.json": {"max_seq_length": int(max_length), "do_lower_case": False},
        "config_sentence_transformers.json": {
            "__version__": {
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }
    (folder / "1_Pooling").mkdir(exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
