"""TinyBERT-style data augmentation for task distillation (Jiao et al., 2020, Algorithm 1).

For every word of a training text that is a single word piece, a masked language model sees
the text with that word masked and proposes its ``top_k`` most likely replacements; each of
``variants`` new texts then replaces every such word, with probability ``replace_prob``, by one
of its candidates. (TinyBERT takes GloVe neighbours for words of several pieces; kdformer keeps
those words as they are.) Sentence pairs are augmented side by side.

Variants carry no gold label (label -100; NaN for regression): they are trained on the
teacher's soft targets and intermediate knowledge only, as in TinyBERT. They are computed once
and cached as JSON lines under ``cache_dir``, keyed by the MLM, the texts, the settings and
the seed, so every later run with the same inputs reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kdformer.config.base import ConfigError
from kdformer.config.tasks.augment import AugmentConfig
from kdformer.models import load_model, load_tokenizer, resolve_name

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/kdformer/augment")


def _fingerprint(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_identity(name: str) -> dict[str, Any]:
    """What identifies the MLM: its folder's config and weight files (size, time) or hub name."""

    source = resolve_name(name)
    folder = Path(source)
    if not folder.is_dir():
        return {"hub": source}
    files = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    return {
        "folder": str(folder.resolve()),
        "files": [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files if f.is_file()],
    }


def cache_path(examples: Any, config: AugmentConfig, seed: int) -> Path:
    """The cache file for these examples, settings and seed."""
    columns = [c for c in ("text", "text_pair") if c in examples.column_names]
    data = hashlib.sha1()
    for column in columns:
        for text in examples[column]:
            data.update(text.encode("utf-8") + b"\0")
    settings = config.model_dump(mode="json", exclude={"cache_dir", "batch_size"})
    key = _fingerprint(
        {"model": _model_identity(config.model), "data": data.hexdigest(), "settings": settings,
         "seed": seed}
    )  # fmt: skip
    root = (config.cache_dir or DEFAULT_CACHE).expanduser()
    return root / f"augment-{key}.jsonl"


class CandidateFinder:
    """Replacement candidates for the single-piece words of texts, from a masked LM."""

    def __init__(self, config: AugmentConfig):
        import torch
        from transformers import AutoModelForMaskedLM

        self.config = config
        self.tokenizer = load_tokenizer(config.model)
        self.model = load_model(config.model, AutoModelForMaskedLM).eval()
        self.torch = torch

        if self.tokenizer.mask_token_id is None:
            raise ConfigError(
                f"task.augment.model '{config.model}' has no mask token: it must be a masked "
                "language model (e.g. bert-base-uncased)"
            )
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        kind = (
            type(backend.model).__name__ if backend is not None else type(self.tokenizer).__name__
        )
        if kind != "WordPiece":
            raise ConfigError(
                f"task.augment.model '{config.model}' tokenizes with {kind}; TinyBERT-style "
                "augmentation replaces whole words that are one WordPiece, so it needs a "
                "BERT-family masked LM (e.g. bert-base-uncased, distilbert-base-uncased)"
            )

    def words(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        """The tokenizer's pre-tokenised words with character offsets."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and backend.pre_tokenizer is not None:
            return [(w, o) for w, o in backend.pre_tokenizer.pre_tokenize_str(text)]
        words, start = [], 0
        for word in text.split():
            begin = text.index(word, start)
            words.append((word, (begin, begin + len(word))))
            start = begin + len(word)
        return words

    def replaceable(self, word: str) -> bool:
        return word.isalpha() and len(self.tokenizer.tokenize(word)) == 1

    def candidates(self, texts: list[str]) -> list[dict[int, list[str]]]:
        """For each text: word index -> candidate replacements (most likely first)."""
        from tqdm.auto import tqdm

        jobs: list[tuple[int, int, str]] = []  # (text index, word index, masked text)
        for t, text in enumerate(texts):
            for w, (word, (begin, end)) in enumerate(self.words(text)):
                if self.replaceable(word):
                    masked = text[:begin] + self.tokenizer.mask_token + text[end:]
                    jobs.append((t, w, masked))
        found: list[dict[int, list[str]]] = [{} for _ in texts]
        size = self.config.batch_size
        with self.torch.inference_mode():
            for start in tqdm(
                range(0, len(jobs), size), desc="augment: MLM candidates", leave=False
            ):
                chunk = jobs[start : start + size]
                encoded = self.tokenizer(
                    [masked for _, _, masked in chunk],
                    truncation=True,
                    max_length=self.config.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                logits = self.model(**encoded).logits
                is_mask = encoded["input_ids"] == self.tokenizer.mask_token_id
                for row, (t, w, _) in enumerate(chunk):
                    positions = is_mask[row].nonzero()
                    if len(positions) == 0:  # the mask was truncated away
                        continue
                    scores = logits[row, int(positions[0])]
                    top = scores.topk(self.config.top_k * 3).indices.tolist()
                    original = self.words(texts[t])[w][0].lower()
                    words = []
                    for token in self.tokenizer.convert_ids_to_tokens(top):
                        if token.isalpha() and token.lower() != original and token not in words:
                            words.append(token)
                        if len(words) == self.config.top_k:
                            break
                    if words:
                        found[t][w] = words
        return found


def make_variants(
    text: str,
    words: list[tuple[str, tuple[int, int]]],
    candidates: dict[int, list[str]],
    count: int,
    replace_prob: float,
    rng: np.random.Generator,
) -> list[str]:
    """``count`` new texts: each word with candidates is replaced, with ``replace_prob``, by one
    of them (uniformly); everything between words is kept as it was."""
    variants = []
    for _ in range(count):
        pieces, last = [], 0
        for index, (_, (begin, end)) in enumerate(words):
            pieces.append(text[last:begin])
            options = candidates.get(index)
            if options and rng.random() < replace_prob:
                pieces.append(options[int(rng.integers(len(options)))])
            else:
                pieces.append(text[begin:end])
            last = end
        pieces.append(text[last:])
        variants.append("".join(pieces))
    return variants


def augment_examples(examples: Any, config: AugmentConfig, seed: int, regression: bool) -> Any:
    """The examples followed by ``variants`` new texts each (no gold label), from the cache when
    these examples were augmented with these settings before."""
    import datasets

    path = cache_path(examples, config, seed)
    columns = [c for c in ("text", "text_pair") if c in examples.column_names]
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        logger.info("augmentation: %d cached variants from %s", len(rows), path)
    else:
        finder = CandidateFinder(config)
        rng = np.random.default_rng(seed)
        per_column = {}
        for column in columns:
            texts = list(examples[column])
            per_column[column] = (texts, finder.candidates(texts))
        rows = []
        for i in range(len(examples)):
            new = {}
            for column in columns:
                texts, found = per_column[column]
                new[column] = make_variants(
                    texts[i],
                    finder.words(texts[i]),
                    found[i],
                    config.variants,
                    config.replace_prob,
                    rng,
                )
            for v in range(config.variants):
                rows.append({"source": i, **{c: new[c][v] for c in columns}})
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(path.name + ".tmp")
        scratch.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        scratch.replace(path)
    no_label = float("nan") if regression else -100
    variants = datasets.Dataset.from_dict(
        {
            **{c: [r[c] for r in rows] for c in columns},
            "label": [no_label] * len(rows),
        },
        features=examples.features,
    )
    return datasets.concatenate_datasets([examples, variants])
