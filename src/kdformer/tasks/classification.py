"""Sequence classification and regression: the nine GLUE tasks (:mod:`.glue`) and the user's
own files (:mod:`.classification_files`), scored by :mod:`.classification_metrics`.
"""

from __future__ import annotations

import csv
import difflib
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from kdformer.alignment import check_fast, paired_text_features
from kdformer.config.base import DataError
from kdformer.config.tasks.classification import ClassificationTaskConfig
from kdformer.features import OutputSpec
from kdformer.tasks.augment import augment_examples
from kdformer.tasks.base import LabelledTask, Purpose, Scorer, Split, load_hub_split
from kdformer.tasks.classification_files import (
    TABLE_SUFFIXES,
    encode_floats,
    encode_labels,
    read_delimited,
    read_json_lines,
    real_number_labels,
    sorted_label_names,
    without_unusable_rows,
)
from kdformer.tasks.classification_metrics import classification_scores
from kdformer.tasks.glue import GLUE_TASKS, glue_task_dir

CUSTOM_TASK = "classification"
"""The task name for the user's own files."""
CLASSIFICATION_TASK_NAMES: list[str] = [*GLUE_TASKS, CUSTOM_TASK]


class ClassificationScorer(Scorer):
    """Collects per-example logits; argmax (or the value, for regression) against gold labels."""

    def __init__(self, task: ClassificationTask, examples: datasets.Dataset):
        self.task = task
        self.labels = np.asarray(examples["label"])
        self.logits: list[np.ndarray] = []

    def add(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        self.logits.append(outputs["logits"].float().cpu().numpy())

    def metrics(self) -> dict[str, float]:
        logits = np.concatenate(self.logits) if self.logits else np.zeros((0, self.task.num_labels))
        return self.task.compute_metrics(logits, self.labels)


class ClassificationTask(LabelledTask):
    """A GLUE task or the user's own classification/regression files (name 'classification')."""

    type = "classification"
    config_class = ClassificationTaskConfig
    model_class = AutoModelForSequenceClassification
    pipeline_tag = "text-classification"
    outputs = (OutputSpec("logits", label_key="labels", over="classes", rows="example"),)
    baseline_name = "majority class"
    config: ClassificationTaskConfig

    def card_dataset(self) -> dict[str, str] | None:
        if self.spec is None:
            return None
        return {
            "name": f"GLUE {self.spec.hub_config.upper()}",
            "type": self.config.hub_dataset,
            "config": self.spec.hub_config,
            "split": self.spec.hub_eval_split,
        }

    def __init__(self, config: ClassificationTaskConfig, seed: int = 42):
        super().__init__(config, seed)
        if self.name not in CLASSIFICATION_TASK_NAMES:
            close = difflib.get_close_matches(self.name, CLASSIFICATION_TASK_NAMES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise DataError(
                f"Unknown task '{config.name}'{hint}. Classification names: "
                f"{', '.join(CLASSIFICATION_TASK_NAMES)} (use 'classification' for your own "
                "files); other task types: set task.type to ner, qa, text or embedding."
            )
        self.spec = GLUE_TASKS.get(self.name)
        if self.spec is not None:
            self.is_regression = self.spec.label_names is None
            self.metric_names = self.spec.metrics
        else:
            self.is_regression = config.regression
            self.metric_names = (
                ("pearson", "spearman") if config.regression else ("accuracy", "f1_macro")
            )
        self.main_metric = self.metric_names[0]
        self._raw_cache: dict[Path, dict[str, list[Any]]] = {}

    # ---- labels ----------------------------------------------------------------------------

    @functools.cached_property
    def label_names(self) -> list[str] | None:  # type: ignore[override]
        """GLUE: the hub's names. Own files: distinct labels of the training file."""
        if self.is_regression:
            return None
        if self.spec is not None:
            return list(self.spec.label_names or ())
        path = self._custom_path("train" if self.config.train_file else "eval")
        names = sorted_label_names(self._read_custom(path)["label"])
        real = real_number_labels(names)
        if real:
            raise DataError(
                f"{path} has labels that are real numbers ({', '.join(real[:5])}"
                f"{', ...' if len(real) > 5 else ''}): read as classes, each of its {len(names)} "
                "distinct values would be a class of its own. For numeric targets set "
                "task.regression: true; for classes, label each example with a class name or a "
                "whole number."
            )
        if len(names) < 2:
            raise DataError(
                f"{path} has only the label(s) {names}; classification needs at least two "
                "(for numeric targets set task.regression: true)."
            )
        return names

    @property
    def num_labels(self) -> int:  # type: ignore[override]
        return 1 if self.is_regression else len(self.label_names or [])

    # ---- loading ---------------------------------------------------------------------------

    def read(self, split: Split) -> datasets.Dataset:
        if self.spec is None:
            return self._load_custom(split)
        if self.config.data_dir is None:
            return self._load_hub(split)
        return self._load_glue_tsv(split)

    def distillation_examples(self) -> datasets.Dataset:
        """The training split, plus TinyBERT-style variants (without gold labels) when
        ``task.augment`` is set; the variants are cached on disk and reused."""
        train = self.load("train")
        if self.config.augment is None:
            return train

        return augment_examples(train, self.config.augment, self.seed, self.is_regression)

    def _build(self, columns: dict[str, list[Any]], labels: list[Any]) -> datasets.Dataset:
        """A data set in the normalised layout, with stable column types."""
        data = {"text": [str(t) for t in columns["text"]]}
        if "text_pair" in columns:
            data["text_pair"] = [str(t) for t in columns["text_pair"]]
        return datasets.Dataset.from_dict({**data, "label": labels}, features=self._features(data))

    def _features(self, columns: Iterable[str]) -> datasets.Features:
        label_type = "float32" if self.is_regression else "int64"
        features = {name: datasets.Value("string") for name in columns if name != "label"}
        return datasets.Features({**features, "label": datasets.Value(label_type)})

    def _encode(self, values: list[Any], path: Path) -> list[Any]:
        if self.is_regression:
            return encode_floats(values, path)
        names = self.label_names or []
        name_to_id = {name: i for i, name in enumerate(names)}
        if self.spec is not None:  # GLUE files may hold the ids themselves (0/1)
            name_to_id.update({str(i): i for i in range(len(names))})
        return encode_labels(values, name_to_id, path)

    def _load_glue_tsv(self, split: Split) -> datasets.Dataset:
        spec = self.spec
        assert spec is not None and self.config.data_dir is not None
        filename = "train.tsv" if split == "train" else spec.eval_file
        path = glue_task_dir(Path(self.config.data_dir), spec.folder) / filename
        if not path.is_file():
            raise DataError(
                f"GLUE file not found: {path}. task.data_dir must be the GLUE root holding "
                f"{spec.folder}/train.tsv and {spec.folder}/{spec.eval_file} (the layout the "
                f"official download script writes), or the {spec.folder} folder itself."
            )
        wanted = {"text": spec.text, "label": spec.label}
        if spec.text_pair:
            wanted["text_pair"] = spec.text_pair
        columns = read_delimited(
            path, wanted, delimiter="\t", quoting=csv.QUOTE_NONE, header=spec.header
        )
        return self._build(columns, self._encode(columns["label"], path))

    def _load_hub(self, split: Split) -> datasets.Dataset:
        spec = self.spec
        assert spec is not None
        hub_split = "train" if split == "train" else spec.hub_eval_split
        source = f"{self.config.hub_dataset} ({spec.hub_config}, split {hub_split})"
        try:
            dataset = load_hub_split(self.config.hub_dataset, spec.hub_config, hub_split)
        except Exception as exc:  # network, auth, missing config: all mean "use local files"
            raise DataError(
                f"Could not load {source} from the Hugging Face hub: {exc}. For offline use, "
                "download GLUE and set task.data_dir to its root (e.g. ../shared/data/glue)."
            ) from exc
        rename = {spec.hub_text: "text", "label": "label"}
        if spec.hub_text_pair:
            rename[spec.hub_text_pair] = "text_pair"
        missing = [col for col in rename if col not in dataset.column_names]
        if missing:
            raise DataError(
                f"{source} has no column(s) {missing}; columns found: {dataset.column_names}. "
                "Set task.hub_dataset to a GLUE copy with the nyu-mll/glue layout."
            )
        dataset = dataset.select_columns(list(rename))
        dataset = dataset.rename_columns({k: v for k, v in rename.items() if k != v})
        return dataset.cast(self._features(dataset.column_names))

    def _custom_path(self, split: Split) -> Path:
        key = "train_file" if split == "train" else "eval_file"
        path = getattr(self.config, key)
        layout = (
            f"a .csv/.tsv file with a header row, or .jsonl with one JSON object per line, "
            f"holding the columns '{self.config.text_column}' and '{self.config.label_column}'"
        )
        if path is None:
            raise DataError(f"Task 'classification' needs task.{key}: {layout}.")
        path = Path(path)
        if path.is_dir():
            found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)
            inside = f"it holds {', '.join(found[:5])}" if found else "it holds no such file"
            raise DataError(f"task.{key} {path} is a folder ({inside}). Give the file: {layout}.")
        if not path.is_file():
            raise DataError(f"task.{key} not found: {path}. Expected {layout}.")
        return path

    def _read_custom(self, path: Path) -> dict[str, list[Any]]:
        """Raw columns of one of the user's files (cached: label_names reads the train file too)."""
        if path in self._raw_cache:
            return self._raw_cache[path]
        wanted = {"text": self.config.text_column, "label": self.config.label_column}
        if self.config.text_pair_column:
            wanted["text_pair"] = self.config.text_pair_column
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            columns = read_delimited(path, wanted, delimiter="\t" if suffix == ".tsv" else ",")
        elif suffix in (".jsonl", ".json"):
            columns = read_json_lines(path, wanted)
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}'; use .csv, .tsv or .jsonl.")
        columns = without_unusable_rows(columns, path, wanted, nan_labels=not self.is_regression)
        if not columns["text"]:
            raise DataError(f"{path} holds no examples.")
        self._raw_cache[path] = columns
        return columns

    def _load_custom(self, split: Split) -> datasets.Dataset:
        path = self._custom_path(split)
        _ = self.label_names  # reads (and caches) the training file first to fix the label set
        columns = self._read_custom(path)
        self._raw_cache.pop(path, None)  # free the memory; label_names keeps just the label set
        return self._build(columns, self._encode(columns["label"], path))

    # ---- model side ------------------------------------------------------------------------

    def tokenize(
        self, dataset: datasets.Dataset, tokenizer: Any, purpose: Purpose = "train"
    ) -> datasets.Dataset:
        has_pair = "text_pair" in dataset.column_names

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            pair = batch["text_pair"] if has_pair else None
            encoded = tokenizer(
                batch["text"], pair, truncation=True, max_length=self.config.max_length
            )
            return {**encoded, "labels": batch["label"]}

        tokenized = dataset.map(
            encode, batched=True, remove_columns=dataset.column_names, desc="Tokenizing"
        )
        if self.is_regression:  # float32 like the model's outputs, so MSE needs no cast
            tokenized = tokenized.cast_column("labels", datasets.Value("float32"))
        return tokenized

    def cross_tokenize(
        self,
        dataset: datasets.Dataset,
        tokenizer: Any,
        teacher_tokenizer: Any,
        purpose: Purpose = "train",
    ) -> datasets.Dataset:
        """Each text (pair) tokenised by the student and by the teacher, with the unit maps
        between them (the logits are per example and need none; hidden states use them)."""
        check_fast(tokenizer, teacher_tokenizer)
        has_pair = "text_pair" in dataset.column_names
        options = {
            "truncation": True,
            "max_length": self.config.max_length,
            "return_offsets_mapping": True,
        }

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            pair = batch["text_pair"] if has_pair else None
            student = tokenizer(batch["text"], pair, **options)
            teacher = teacher_tokenizer(batch["text"], pair, **options)
            texts = list(zip(batch["text"], pair)) if pair else [(t,) for t in batch["text"]]
            return {**paired_text_features(student, teacher, texts), "labels": batch["label"]}

        tokenized = dataset.map(
            encode,
            batched=True,
            remove_columns=dataset.column_names,
            desc="Tokenizing (student and teacher)",
        )
        if self.is_regression:
            tokenized = tokenized.cast_column("labels", datasets.Value("float32"))
        return tokenized

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Scores of per-example logits (task label order) against gold label ids."""
        return classification_scores(
            logits, labels, self.metric_names, self.num_labels, self.is_regression
        )

    def scorer(self, features: datasets.Dataset, examples: datasets.Dataset) -> Scorer:
        return ClassificationScorer(self, examples)

    def baseline(
        self, train: datasets.Dataset, examples: datasets.Dataset
    ) -> dict[str, float] | None:
        """Always predicting the training split's most frequent label (classification), or a
        constant (regression: no correlation, 0). Retention hides it: on MRPC, predicting
        "paraphrase" everywhere scores 68% accuracy, 91% of a 75% teacher."""
        if len(train) == 0 or len(examples) == 0:
            return None
        labels = np.asarray(examples["label"])
        if self.is_regression:
            return self.compute_metrics(np.zeros((len(examples), 1), dtype=np.float32), labels)
        train_labels = np.asarray(train["label"])
        counts = np.bincount(train_labels[train_labels >= 0], minlength=self.num_labels)
        logits = np.zeros((len(examples), self.num_labels), dtype=np.float32)
        logits[:, int(counts.argmax())] = 1.0
        return self.compute_metrics(logits, labels)
