"""Fingerprints that key the teacher-output cache: what the teacher's outputs depend on.

Each is a content hash, not a name or a file time: a re-saved identical teacher hits the same
entry, a teacher trained one step further misses it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "architectures")

#: The files of a saved model folder that what it computes depends on: weights, its config
#: and its tokenizer's files.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def _digest() -> Any:
    return hashlib.blake2b(digest_size=16)


def weights_fingerprint(model: nn.Module) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, bytes) and of the config
    fields that change outputs (not its path, version or kernel choice)."""
    digest = _digest()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().contiguous().cpu().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    config = getattr(model, "config", None)
    if config is not None:
        fields = {
            k: v
            for k, v in config.to_dict().items()
            if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS
        }
        fields.pop("dtype", None), fields.pop("torch_dtype", None)  # the weights' bytes carry it
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """Hash of a saved model folder by content: the names and bytes of its weights, config and
    tokenizer files (:data:`MODEL_FILE_SUFFIXES`, top level), read once in blocks. Unlike
    sizes and times, it tells a retrained model of the same size saved within the same second
    from the old one, and finds a re-saved identical one the same."""
    digest = _digest()
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.suffix not in MODEL_FILE_SUFFIXES:
            continue
        digest.update(f"{path.name}:{path.stat().st_size}:".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of the tokenizer's vocabulary, rules and special tokens."""
    digest = _digest()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(type(tokenizer).__name__.encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def columns_fingerprint(features: Any, columns: Iterable[str]) -> str:
    """Hash of the named columns of a ``datasets.Dataset`` (values and row boundaries), read
    from its Arrow table without converting rows to Python."""
    digest = _digest()
    table = features.data.table if hasattr(features, "data") else features
    indices = getattr(features, "_indices", None)
    if indices is not None:  # a selected view: hash the rows it shows, in order
        table = table.take(indices.column(0))
    for name in sorted(columns):
        column = table.column(name).combine_chunks()
        digest.update(f"{name}:{column.type}:{len(column)}".encode())
        _hash_array(digest, column)
    return digest.hexdigest()


def _hash_array(digest: Any, array: pa.Array) -> None:
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        offsets = np.asarray(array.offsets)
        digest.update((offsets - offsets[0]).astype(np.int64).tobytes())
        array = array.flatten()
    values = array.to_numpy(zero_copy_only=False)
    digest.update(np.ascontiguousarray(values).tobytes())
