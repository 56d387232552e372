"""Sentence embeddings: a bare encoder whose pooled last hidden states are a sentence vector
(sentence-transformers' Transformer + Pooling (+ Normalize) model), distilled on unlabelled
sentences and scored on sentence pairs by cosine similarity.

Training sentences come from sentence files, raw text split into sentences and the text
columns of CSV/TSV tables (:mod:`.embedding_files`), deduplicated and, by default, without
the evaluation pairs' sentences. Evaluation: STS pairs (Spearman and Pearson correlation of
the cosine with the gold scores; the main metric is Spearman) and paraphrase pairs
(accuracy and F1 at the best cosine threshold), each sentence of a pair encoded on its own.
The pooling and normalisation are the teacher's (its sentence-transformers files,
:mod:`.embedding_folder`) unless set; the student is scored and saved with them, so that
``SentenceTransformer(student)`` loads it as the teacher's kind of model.

Nothing is fine-tuned: the teacher already is an embedding model. Knowledge terms read the
models' last hidden states (``sentence_embedding``, ``similarity``; hidden, attention and
relation knowledge work as on any encoder).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoModel

from kdformer.alignment import check_fast, paired_text_features
from kdformer.config.base import DataError
from kdformer.config.tasks.embedding import EmbeddingTaskConfig
from kdformer.pooling import normalise, pool
from kdformer.tasks.base import Purpose, Scorer, Split, Task
from kdformer.tasks.embedding_files import (
    read_labelled_pairs,
    read_scored_pairs,
    read_sentence_lines,
    read_table_sentences,
    read_text_sentences,
)
from kdformer.tasks.embedding_folder import (
    model_source,
    read_embedding_layout,
    write_embedding_layout,
)
from kdformer.tasks.embedding_metrics import (
    bag_of_words_cosine,
    correlations,
    paraphrase_scores,
)

STS, PARAPHRASE = "sts", "paraphrase"
"""The ``kind`` of an evaluation pair."""


def pair_metrics(similarities: np.ndarray, examples: datasets.Dataset) -> dict[str, float]:
    """Scores of one similarity per evaluation pair: correlations on the STS pairs,
    best-threshold accuracy and F1 on the paraphrase pairs."""
    kinds = np.asarray(examples["kind"])
    metrics: dict[str, float] = {}
    sts = kinds == STS
    if sts.any():
        metrics.update(correlations(similarities[sts], np.asarray(examples["score"])[sts]))
    paraphrase = kinds == PARAPHRASE
    if paraphrase.any():
        labels = np.asarray(examples["label"])[paraphrase]
        metrics.update(paraphrase_scores(similarities[paraphrase], labels))
    return metrics


class EmbeddingScorer(Scorer):
    """Pools each sentence's last hidden states, then scores the cosine similarity of every
    pair (the features hold each pair's two sentences one after the other)."""

    def __init__(self, task: EmbeddingTask, examples: datasets.Dataset, features: int):
        self.task = task
        self.examples = examples
        self.expected = features
        self.vectors: list[torch.Tensor] = []

    def add(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        hidden = outputs["last_hidden_state"]
        mask = batch.get("attention_mask")
        mask = mask.to(hidden.device) if mask is not None else None
        self.vectors.append(pool(hidden, mask, self.task.pooling).cpu())

    def metrics(self) -> dict[str, float]:
        vectors = torch.cat(self.vectors) if self.vectors else torch.zeros(0, 1)
        if len(vectors) != self.expected or self.expected != 2 * len(self.examples):
            raise ValueError(
                f"the scorer got {len(vectors)} sentence vectors for {len(self.examples)} pairs; "
                "evaluate the features of task.tokenize(examples, tokenizer, 'eval') in order"
            )
        unit = normalise(vectors)
        similarities = (unit[0::2] * unit[1::2]).sum(-1).numpy().astype(np.float64)
        return pair_metrics(similarities, self.examples)


class EmbeddingTask(Task):
    """Sentence embeddings: pooled encoder outputs, scored on STS and paraphrase pairs."""

    type = "embedding"
    config_class = EmbeddingTaskConfig
    config: EmbeddingTaskConfig
    model_class = AutoModel
    pipeline_tag = "sentence-similarity"
    outputs = ()
    baseline_name = "bag-of-words cosine"
    card_library = "sentence-transformers"
    card_tags = ("sentence-transformers", "sentence-similarity", "feature-extraction")
    finetune_refusal = (
        "an embedding task trains no task head, so there is nothing to fine-tune: its teacher is "
        "an embedding model already (e.g. minilm-l6, a sentence-transformers model). Remove "
        "`finetune:`"
    )

    def __init__(self, config: EmbeddingTaskConfig, seed: int = 42):
        super().__init__(config, seed)
        self.main_metric = "spearman" if config.sts_file is not None else "accuracy"
        self.table_metrics = (("spearman", "pearson") if config.sts_file is not None else ()) + (
            ("accuracy", "f1") if config.paraphrase_file is not None else ()
        )
        self.pooling = "mean" if config.pooling == "auto" else config.pooling
        """The pooling in use: the configured one, or (auto) the teacher's once
        :meth:`adapt_to_teacher` has read it (mean until then)."""
        self.normalise = config.normalize is True
        self.train_counts: dict[str, int] = {}

    @property
    def scored_outputs(self) -> tuple[str, ...]:
        return ("last_hidden_state",)

    @property
    def sentence_pooling(self) -> str:
        return self.pooling

    def adapt_to_teacher(self, teacher_config: Any) -> None:
        """Resolve ``pooling: auto`` and ``normalize: auto`` from the teacher's
        sentence-transformers files (mean and no normalisation when it has none)."""
        pooling, normalised = read_embedding_layout(model_source(teacher_config))
        if self.config.pooling == "auto":
            self.pooling = pooling or "mean"
        if self.config.normalize == "auto":
            self.normalise = bool(normalised)

    def long_input_hint(self) -> str:
        return " (longer sentences are truncated)"

    # ---- reading ---------------------------------------------------------------------------

    def read(self, split: Split) -> datasets.Dataset:
        return self._read_train() if split == "train" else self._read_eval()

    def _read_eval(self) -> datasets.Dataset:
        cfg = self.config
        rows: dict[str, list[Any]] = {k: [] for k in ("sentence1", "sentence2", "score", "label")}
        kinds: list[str] = []
        if cfg.sts_file is not None:
            pairs = read_scored_pairs(cfg.sts_file)
            count = len(pairs["score"])
            rows["sentence1"] += pairs["sentence1"]
            rows["sentence2"] += pairs["sentence2"]
            rows["score"] += pairs["score"]
            rows["label"] += [-1] * count
            kinds += [STS] * count
        if cfg.paraphrase_file is not None:
            pairs = read_labelled_pairs(cfg.paraphrase_file)
            count = len(pairs["label"])
            rows["sentence1"] += pairs["sentence1"]
            rows["sentence2"] += pairs["sentence2"]
            rows["score"] += [float("nan")] * count
            rows["label"] += pairs["label"]
            kinds += [PARAPHRASE] * count
        features = datasets.Features(
            {
                "sentence1": datasets.Value("string"),
                "sentence2": datasets.Value("string"),
                "score": datasets.Value("float32"),
                "label": datasets.Value("int64"),
                "kind": datasets.Value("string"),
            }
        )
        return datasets.Dataset.from_dict({**rows, "kind": kinds}, features=features)

    def _read_train(self) -> datasets.Dataset:
        cfg = self.config
        sentences: list[str] = []
        for path in cfg.sentence_files:
            sentences += read_sentence_lines(path)
        for path in cfg.text_files:
            sentences += read_text_sentences(path, cfg.min_words)
        for path in cfg.table_files:
            sentences += read_table_sentences(path, cfg.text_columns)
        if not sentences:
            raise DataError(
                f"task '{self.name}' has no training sentences: set task.sentence_files (one "
                "sentence per line), task.text_files (raw text, e.g. "
                "../shared/data/text/litbank-novels) or task.table_files (e.g. "
                "../shared/data/glue/SST-2/train.tsv)"
            )
        unique = list(dict.fromkeys(s for s in sentences if s))
        excluded = 0
        if cfg.exclude_eval_sentences:
            pairs = self._read_eval()
            held_out = set(pairs["sentence1"]) | set(pairs["sentence2"])
            kept = [s for s in unique if s not in held_out]
            excluded, unique = len(unique) - len(kept), kept
        if not unique:
            raise DataError(
                f"task '{self.name}': every training sentence is also in the evaluation pairs; "
                "train on other sentences, or set task.exclude_eval_sentences: false"
            )
        self.train_counts = {
            "read": len(sentences),
            "duplicates": len(sentences) - len(unique) - excluded,
            "excluded": excluded,
        }
        return datasets.Dataset.from_dict(
            {"sentence": unique}, features=datasets.Features({"sentence": datasets.Value("string")})
        )

    def limit_samples(self, dataset: datasets.Dataset, split: Split) -> datasets.Dataset:
        """max_eval_samples: the first pairs of each evaluation file."""
        limit = self.config.max_eval_samples
        if split == "train" or limit is None:
            return super().limit_samples(dataset, split)
        kinds = dataset["kind"]
        keep, seen = [], {STS: 0, PARAPHRASE: 0}
        for i, kind in enumerate(kinds):
            if seen[kind] < limit:
                keep.append(i)
                seen[kind] += 1
        return dataset if len(keep) == len(dataset) else dataset.select(keep)

    def describe_data(self) -> str:
        parts = []
        if "train" in self._splits:
            counts = self.train_counts
            parts.append(
                f"train {len(self._splits['train'])} sentences (of {counts.get('read', 0)} read: "
                f"{counts.get('duplicates', 0)} duplicates and {counts.get('excluded', 0)} "
                "evaluation sentences left out)"
            )
        if "eval" in self._splits:
            kinds = self._splits["eval"]["kind"]
            described = [
                f"{kinds.count(kind)} {kind} pairs" for kind in (STS, PARAPHRASE) if kind in kinds
            ]
            parts.append("eval " + " + ".join(described))
        normalised = ", normalised" if self.normalise else ""
        return f"{self.name}: " + ", ".join(parts) + f"; {self.pooling} pooling{normalised}"

    # ---- model side ------------------------------------------------------------------------

    def tokenize(
        self, dataset: datasets.Dataset, tokenizer: Any, purpose: Purpose = "train"
    ) -> datasets.Dataset:
        """One feature per sentence; evaluation pairs give two, first then second sentence of
        each pair, each encoded on its own (as an embedding model serves them)."""
        if "sentence" in dataset.column_names:
            texts = list(dataset["sentence"])
        else:
            texts = [s for pair in zip(dataset["sentence1"], dataset["sentence2"]) for s in pair]
        encoded = tokenizer(texts, truncation=True, max_length=self.config.max_length)
        return datasets.Dataset.from_dict(dict(encoded))

    def cross_tokenize(
        self,
        dataset: datasets.Dataset,
        tokenizer: Any,
        teacher_tokenizer: Any,
        purpose: Purpose = "train",
    ) -> datasets.Dataset:
        """Each sentence tokenised by the student and by the teacher, with the unit maps between
        them (sentence vectors are pooled by each model over its own tokens; hidden states and
        relations use the maps)."""
        check_fast(tokenizer, teacher_tokenizer)
        if "sentence" in dataset.column_names:
            texts = list(dataset["sentence"])
        else:
            texts = [s for pair in zip(dataset["sentence1"], dataset["sentence2"]) for s in pair]
        options = {
            "truncation": True,
            "max_length": self.config.max_length,
            "return_offsets_mapping": True,
        }
        student = tokenizer(texts, **options)
        teacher = teacher_tokenizer(texts, **options)
        return datasets.Dataset.from_dict(
            paired_text_features(student, teacher, [(t,) for t in texts])
        )

    def scorer(self, features: datasets.Dataset, examples: datasets.Dataset) -> Scorer:
        return EmbeddingScorer(self, examples, len(features))

    def baseline(
        self, train: datasets.Dataset, examples: datasets.Dataset
    ) -> dict[str, float] | None:
        """The cosine of the two sentences' bag-of-words counts: the lexical overlap that
        needs no model (STS-B's classic unsupervised baseline), which an embedding earns its
        cost only by beating. It learns nothing from ``train``."""
        if len(examples) == 0:
            return None
        similarities = np.asarray(
            [
                bag_of_words_cosine(a, b)
                for a, b in zip(examples["sentence1"], examples["sentence2"])
            ],
            dtype=np.float64,
        )
        return pair_metrics(similarities, examples)

    # ---- saving ----------------------------------------------------------------------------

    def write_model_files(self, folder: Path, model_config: Any) -> None:
        """sentence-transformers' files (Pooling, Normalize, the longest input), so that
        ``SentenceTransformer(folder)`` encodes as this task scores."""
        write_embedding_layout(
            Path(folder),
            self.pooling,
            self.normalise,
            int(model_config.hidden_size),
            self.config.max_length,
        )

    def usage_code(self, model_name: str) -> list[str]:
        pooled = {
            "mean": "(out * mask).sum(1) / mask.sum(1)",
            "cls": "out[:, 0]",
            "max": "out.masked_fill(mask == 0, -1e9).max(1).values",
        }[self.pooling]
        lines = [
            "```python",
            "from sentence_transformers import SentenceTransformer",
            f'model = SentenceTransformer("{model_name}")',
            'embeddings = model.encode(["A man is playing a flute.", "Someone plays a flute."])',
            "print(model.similarity(embeddings, embeddings))",
            "```",
            "",
            f"or with plain `transformers` ({self.pooling} pooling"
            + (", then unit length" if self.normalise else "")
            + "):",
            "",
            "```python",
            "import torch",
            "from transformers import AutoModel, AutoTokenizer",
            f'model = AutoModel.from_pretrained("{model_name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{model_name}")',
            'batch = tokenizer(["A man is playing a flute."], padding=True, return_tensors="pt")',
            "out = model(**batch).last_hidden_state",
            "mask = batch['attention_mask'].unsqueeze(-1)",
            f"embeddings = {pooled}",
        ]
        if self.normalise:
            lines.append("embeddings = torch.nn.functional.normalize(embeddings, dim=-1)")
        return [*lines, "```"]
