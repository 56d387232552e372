"""What every task offers the trainer: normalised data, tokenisation, metrics and label checks.

A task turns its source (GLUE files, the hub, the user's own files) into one column layout,
``text`` / optional ``text_pair`` / ``label``, so the distillation code never needs to know where
the data came from.
"""

from __future__ import annotations

import abc
import re
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import datasets

    from kdformer.config import TaskConfig

Split = Literal["train", "eval"]

# transformers names unnamed outputs LABEL_0, LABEL_1, ...; such names say nothing about the task.
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")


class DataError(ValueError):
    """Bad data input; message names the problem (file path, columns found, ...) and the fix."""


def normalise_label_name(name: str) -> str:
    """Compare label names loosely: 'NOT-ENTAILMENT' and 'not_entailment' are the same label."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def named_model_labels(model_config: Any) -> list[str] | None:
    """The model's output names in output order, or None when it only has default LABEL_i names."""
    id2label = getattr(model_config, "id2label", None) or {}
    names = [str(id2label[i]) for i in sorted(id2label, key=int)]
    if not names or all(_DEFAULT_LABEL.fullmatch(name) for name in names):
        return None
    return names


class Task(abc.ABC):
    """One supervised task: load its splits, tokenize them, score predictions."""

    name: str
    num_labels: int  # 1 for regression
    label_names: list[str] | None  # None for regression
    is_regression: bool
    main_metric: str  # key of compute_metrics' output used to compare teacher and student
    model_class: type  # transformers Auto class that builds a model for this task

    def __init__(self, config: TaskConfig, seed: int = 42):
        self.config = config
        self.seed = seed
        self.name = config.name.lower()
        self._splits: dict[str, datasets.Dataset] = {}

    def load(self, split: Split) -> datasets.Dataset:
        """Columns ``text``, optional ``text_pair``, ``label``; sample limits already applied.
        Read once per task object: validation, fine-tuning, distillation and evaluation of one
        run share the same splits."""
        if split not in self._splits:
            self._splits[split] = self.read(split)
        return self._splits[split]

    @abc.abstractmethod
    def read(self, split: Split) -> datasets.Dataset:
        """Read a split from its source (what :meth:`load` caches)."""

    @abc.abstractmethod
    def tokenize(self, dataset: datasets.Dataset, tokenizer: Any) -> datasets.Dataset:
        """Model inputs plus ``labels``, truncated to ``config.max_length`` and not padded."""

    @abc.abstractmethod
    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Scores of raw model outputs against gold labels, including ``main_metric``."""

    def collator(self, tokenizer: Any) -> Any:
        """Pads each batch to its own longest example, which is cheaper than padding everything."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # ---------------------------------------------------------------------------------------
    # Sample limits
    # ---------------------------------------------------------------------------------------

    def limit_samples(self, dataset: datasets.Dataset, split: Split) -> datasets.Dataset:
        """Apply max_train_samples (seeded random subset) or max_eval_samples (first N)."""
        if split == "train":
            limit = self.config.max_train_samples
            if limit is None or limit >= len(dataset):
                return dataset
            # A random subset, not the first N: GLUE files are often sorted by source or label.
            rng = np.random.default_rng(self.seed)
            indices = np.sort(rng.choice(len(dataset), size=limit, replace=False))
            return dataset.select(indices.tolist())
        limit = self.config.max_eval_samples
        if limit is None or limit >= len(dataset):
            return dataset
        return dataset.select(range(limit))

    # ---------------------------------------------------------------------------------------
    # Labels and models
    # ---------------------------------------------------------------------------------------

    def model_label_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments that give a new head this task's outputs."""
        if self.is_regression:
            return {"num_labels": 1, "problem_type": "regression"}
        names = list(self.label_names or [])
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
        }

    def check_model(self, model_config: Any) -> None:
        """Fail early when a model's head cannot produce this task's outputs."""
        fix = (
            "Fine-tune the teacher on this task first (set `finetune:` in the config) or pick a "
            f"model trained on {self.name}."
        )
        model_labels = int(getattr(model_config, "num_labels", 0))
        if model_labels != self.num_labels:
            raise DataError(
                f"The model has {model_labels} output(s) but task '{self.name}' needs "
                f"{self.num_labels}. {fix}"
            )
        model_names = named_model_labels(model_config)
        if self.is_regression or model_names is None:
            return
        known = {normalise_label_name(name) for name in model_names}
        missing = [
            name for name in self.label_names or [] if normalise_label_name(name) not in known
        ]
        if missing:
            raise DataError(
                f"The model's labels {model_names} do not cover task '{self.name}' labels "
                f"{self.label_names} (missing: {missing}). {fix}"
            )

    def label_ids_for_model(self, model_config: Any) -> list[int] | None:
        """``result[task_id]`` = model output index, for models that order their labels differently.

        None means task ids and model outputs already line up (or the model's labels are unnamed).
        """
        model_names = named_model_labels(model_config)
        if self.is_regression or model_names is None or not self.label_names:
            return None
        position = {normalise_label_name(name): i for i, name in enumerate(model_names)}
        mapping = [position.get(normalise_label_name(name)) for name in self.label_names]
        if None in mapping:
            return None  # check_model reports this case; nothing sensible to map here
        ids = [int(i) for i in mapping if i is not None]
        return None if ids == list(range(len(ids))) else ids
