"""The task contract: everything that differs between classification, NER, QA, raw text and
sentence embeddings.

A task owns its config section, reading its data formats, tokenisation (with alignment for
token and span tasks), its collator, its model class and the made-up batch such a model takes
(:meth:`Task.example_inputs`), which outputs are distilled and which batch keys hold gold
labels, turning model outputs into predictions, its metrics and its trivial baseline. The
trainer, objective, report, pruning and studies only talk to this interface; none of them
names a task.

Every task's data go through three forms:

* **examples** (:meth:`Task.load`): the task's own normalised columns, one row per example
  (a sentence, a document, a question with its context);
* **features** (:meth:`Task.tokenize`): model inputs plus the label keys, possibly several
  per example (long inputs are cut into overlapping windows), plus side columns
  (:attr:`Task.side_columns`) that map features back to examples;
* **scores** (:meth:`Task.scorer`): a :class:`Scorer` collects the model outputs of every
  feature batch and turns them into the task's metrics on the examples.
"""

from __future__ import annotations

import abc
import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from kdformer.config.base import ConfigError, DataError
from kdformer.config.tasks.base import TaskSection
from kdformer.families import position_limit
from kdformer.features import OutputSpec
from kdformer.tasks.inputs import token_inputs

if TYPE_CHECKING:
    import datasets

Split = Literal["train", "eval"]
Purpose = Literal["train", "eval"]

# transformers names unnamed outputs LABEL_0, LABEL_1, ...; such names say nothing about the task.
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")


def resolve_path(value: Path | str | None, base: Path | None) -> Path | None:
    """``value`` as a path; relative ones are taken under ``base`` when one is given."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() or base is None else base / path


def load_hub_split(name: str, config: str | None, split: str) -> datasets.Dataset:
    """A split of a hub data set. Sets still published as a loading script (``conll2003``)
    are read from their parquet export instead, since ``datasets`` 4+ runs no scripts."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except RuntimeError as exc:
        if "scripts are no longer supported" not in str(exc):
            raise
        return datasets.load_dataset(name, config, split=split, revision="refs/convert/parquet")


def right_padded(tokenizer: Any) -> Any:
    """The tokenizer padding on the right: features keep their token positions (labels, word
    indices, answer starts) only when padding goes after them."""
    if getattr(tokenizer, "padding_side", "right") == "right":
        return tokenizer
    padded = copy.copy(tokenizer)
    padded.padding_side = "right"
    return padded


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


def output_layer(model: torch.nn.Module, size: int) -> torch.nn.Linear:
    """The model's last linear layer with ``size`` outputs: the task head's output projection
    (``classifier`` in BERT, ``classifier.out_proj`` in RoBERTa/ELECTRA, ``score`` elsewhere)."""
    found = [
        m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == size
    ]
    if not found:
        raise ConfigError(
            f"{type(model).__name__} has no linear output layer with {size} outputs to reorder"
        )
    return found[-1]


class Scorer(abc.ABC):
    """Collects a model's outputs batch by batch, then scores them on the examples."""

    @abc.abstractmethod
    def add(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        """One batch of model outputs (by name, on any device) and the batch it came from."""

    @abc.abstractmethod
    def metrics(self) -> dict[str, float]:
        """The task's metrics over everything added, including the task's main metric."""


class Task(abc.ABC):
    """One task: its data, tokenisation, model head, distilled outputs, predictions and metrics."""

    type: ClassVar[str]
    """The config tag (``task.type``)."""
    config_class: ClassVar[type[TaskSection]]
    model_class: Any
    """transformers Auto class that builds a model for this task."""
    pipeline_tag: str | None = None
    """The Hugging Face pipeline a model of this task serves (its model card's tag)."""
    outputs: tuple[OutputSpec, ...] = ()
    """Model outputs the objective distils (soft targets) and trains on (hard labels)."""
    side_columns: tuple[str, ...] = ()
    """Feature columns that are not model inputs (they map features back to examples)."""
    main_metric: str | None
    """The metric that compares teacher and student (None: the task scores no predictions)."""
    higher_is_better: bool = True
    finetune_refusal: str | None = None
    """Why a teacher cannot be fine-tuned on this task (None: it can)."""
    baseline_name: str = "trivial baseline"
    """What :meth:`baseline` predicts, as reports name it."""
    table_metrics: tuple[str, ...] | None = None
    """The metrics report tables show (None: all; the JSON report always has every one)."""
    card_library: str = "transformers"
    """The library a model of this task loads with, as its model card names it."""
    card_tags: tuple[str, ...] = ()
    """Hub tags a model card adds for this task."""

    def __init__(self, config: TaskSection, seed: int = 42):
        self.config = config
        self.seed = seed
        self.name = config.name.lower()
        self._splits: dict[str, datasets.Dataset] = {}

    # ---- data -----------------------------------------------------------------------------

    def load(self, split: Split) -> datasets.Dataset:
        """The split's examples, sample limits applied. Read once per task object: validation,
        fine-tuning, distillation and evaluation of one run share the same splits."""
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
        if split not in self._splits:
            dataset = self.read(split)
            if len(dataset) == 0:
                raise DataError(f"The {split} split of task '{self.name}' has no examples.")
            self._splits[split] = self.limit_samples(dataset, split)
        return self._splits[split]

    @abc.abstractmethod
    def read(self, split: Split) -> datasets.Dataset:
        """Read a split's examples from their source (what :meth:`load` caches)."""

    def distillation_examples(self) -> datasets.Dataset:
        """The examples the distillation stage trains on: the training split, unless the task
        adds to it (classification's TinyBERT-style augmentation)."""
        return self.load("train")

    @abc.abstractmethod
    def tokenize(
        self, dataset: datasets.Dataset, tokenizer: Any, purpose: Purpose = "train"
    ) -> datasets.Dataset:
        """Features: model inputs, the label keys and the side columns, not padded."""

    cross_tokenizer_refusal: str | None = None
    """Why this task cannot distil into a student with its own vocabulary (None: it can, with
    features from :meth:`cross_tokenize`)."""

    def cross_tokenize(
        self,
        dataset: datasets.Dataset,
        tokenizer: Any,
        teacher_tokenizer: Any,
        purpose: Purpose = "train",
    ) -> datasets.Dataset:
        """Features for a student with its own vocabulary (``tokenizer``): the student's, as
        :meth:`tokenize` gives them, plus the teacher's inputs of the same text under
        :func:`~kdformer.features.teacher_key` and the unit maps between both tokenizations
        (:mod:`kdformer.alignment`). A task that cannot says why (:attr:`cross_tokenizer_refusal`)."""
        raise ConfigError(
            f"task '{self.name}' ({self.type}) cannot distil into a student with its own "
            f"vocabulary (student.vocabulary): "
            f"{self.cross_tokenizer_refusal or 'it has no cross-tokenised features'}"
        )

    def vocabulary_texts(self, dataset: datasets.Dataset) -> Iterator[str]:
        """The texts of examples, to train a student vocabulary on: every string column but
        ids and titles, lists of words joined by spaces."""
        columns = [
            name
            for name, feature in dataset.features.items()
            if name not in ("id", "title")
            and (
                getattr(feature, "dtype", None) == "string"
                or getattr(getattr(feature, "feature", None), "dtype", None) == "string"
            )
        ]
        for row in dataset.select_columns(columns):
            for value in row.values():
                if isinstance(value, str):
                    yield value
                elif isinstance(value, list):
                    yield " ".join(str(v) for v in value)

    def static_training_features(
        self, features: datasets.Dataset, tokenizer: Any
    ) -> datasets.Dataset:
        """Training features whose model inputs are the same in every epoch, for a teacher-output
        cache (it stores the teacher's outputs per feature). Most tasks' already are; a task
        that changes inputs per batch (dynamic masking) fixes them here, and its training
        collator then only pads."""
        return features

    def model_features(self, features: datasets.Dataset) -> datasets.Dataset:
        """The features without side columns, as the collator and the model take them."""
        drop = [c for c in self.side_columns if c in features.column_names]
        return features.remove_columns(drop) if drop else features

    def collator(
        self, tokenizer: Any, purpose: Purpose = "train", pad_to: int | None = None
    ) -> Any:
        """Pads each batch to its own longest feature, which is cheaper than padding everything.
        ``pad_to``: the one length (a multiple of it) every batch gets when the run's model
        family needs one (Nyströmformer's fixed length, BigBird's block-sparse minimum); the
        run knows it, from its models, not the task."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(right_padded(tokenizer), pad_to_multiple_of=pad_to)

    def example_inputs(
        self,
        model_config: Any,
        batch_size: int,
        length: int,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """A made-up batch of ``batch_size`` inputs of ``length`` (tokens) that a model of
        this task with ``model_config`` takes: what latency, ONNX export, the memory probe and
        estimate and the teacher cache's size probe run, so they never assume the inputs
        themselves. Every entry a model of the task may take; callers keep those a given
        model's forward names. Default: a text encoder's (:func:`token_inputs`); a task whose
        models take other inputs overrides it."""
        return token_inputs(model_config, batch_size, length, generator)

    @property
    def scored_outputs(self) -> tuple[str, ...]:
        """Model outputs the scorer reads: the distilled ones, unless the task scores others
        (sentence embeddings score the last hidden states and distil no output)."""
        return tuple(o.name for o in self.outputs)

    @property
    def sentence_pooling(self) -> str | None:
        """How this task sums a sentence up in one vector (mean, cls, max), for knowledge terms
        whose ``pooling`` is auto; None: the task has no sentence vectors (each model's family
        decides)."""
        return None

    @property
    def label_keys(self) -> tuple[str, ...]:
        """Batch keys that hold gold labels (the Trainer's ``label_names``)."""
        return tuple(dict.fromkeys(o.label_key for o in self.outputs if o.label_key))

    def limit_samples(self, dataset: datasets.Dataset, split: Split) -> datasets.Dataset:
        """Apply max_train_samples (seeded random subset) or max_eval_samples (first N)."""
        if split == "train":
            limit = self.config.max_train_samples
            if limit is None or limit >= len(dataset):
                return dataset
            # A random subset, not the first N: files are often sorted by source or label.
            rng = np.random.default_rng(self.seed)
            indices = np.sort(rng.choice(len(dataset), size=limit, replace=False))
            return dataset.select(indices.tolist())
        limit = self.config.max_eval_samples
        if limit is None or limit >= len(dataset):
            return dataset
        return dataset.select(range(limit))

    def describe_data(self) -> str:
        """One line about the data read (sizes, splits, anything repaired), for the console."""
        parts = [
            f"{split} {len(self._splits[split])}"
            for split in ("train", "eval")
            if split in self._splits
        ]
        return f"{self.name}: " + ", ".join(parts) + " examples"

    # ---- models ---------------------------------------------------------------------------

    def model_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments that give a new model this task's head."""
        return {}

    def head_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments for a checkpoint that may already have a head:
        its size only, so a head of this size keeps its label names for :meth:`align_model`
        to reorder (or, unrelated, to reset)."""
        return {k: v for k, v in self.model_kwargs().items() if k in ("num_labels", "problem_type")}

    def adapt_to_teacher(self, teacher_config: Any) -> None:  # noqa: B027  (an optional hook)
        """Settle what depends on the teacher (raw text: whether it has an MLM head). Called
        before the task's outputs are used with that teacher."""

    def missing_head_hint(self) -> str:
        """Added to the error for a teacher whose checkpoint lacks the task head."""
        return ""

    def check_model(self, model_config: Any) -> None:  # noqa: B027  (an optional hook)
        """Fail early when a model's head cannot produce this task's outputs."""

    def align_model(self, model: torch.nn.Module) -> None:  # noqa: B027  (an optional hook)
        """Make the model's outputs follow the task's label order (in place), so that gold
        labels, soft labels, metrics and pruning data all use one order."""

    def check_lengths(self, model_config: Any, model_name: str) -> None:
        """Fail when ``max_length`` is over the model's position limit."""

        limit = position_limit(model_config)
        if limit is not None and self.config.max_length > limit:
            raise ConfigError(
                f"task.max_length {self.config.max_length} is over the position limit of "
                f"'{model_name}' ({limit} tokens): set task.max_length to at most {limit}"
                + self.long_input_hint()
            )

    def check_inputs(self, tokenizer: Any) -> None:  # noqa: B027  (an optional hook)
        """Fail early when an example of the splits loaded so far cannot become features with
        ``tokenizer`` (a QA question too long for its windows); validation calls it once the
        splits are loaded, before any training or evaluation."""

    def long_input_hint(self) -> str:
        """What the task does with inputs longer than ``max_length`` (for error messages)."""
        return " (longer inputs are truncated)"

    # ---- predictions and metrics -----------------------------------------------------------

    @abc.abstractmethod
    def scorer(self, features: datasets.Dataset, examples: datasets.Dataset) -> Scorer:
        """A fresh :class:`Scorer` for ``features`` (from :meth:`tokenize` with purpose eval) of
        ``examples``."""

    def write_model_files(self, folder: Path, model_config: Any) -> None:  # noqa: B027
        """Files a saved model of this task needs besides its weights, config and tokenizer
        (sentence-transformers' pooling files for an embedding model); called by every save."""

    def usage_code(self, model_name: str) -> list[str]:
        """Markdown lines for the model card: how to load a saved model of this task."""
        name = self.model_class.__name__
        return [
            "```python",
            f"from transformers import {name}, AutoTokenizer",
            f'model = {name}.from_pretrained("{model_name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{model_name}")',
            "```",
        ]

    def card_dataset(self) -> dict[str, str] | None:
        """The evaluation data as a Hugging Face card names it (``name``, ``type``: the hub
        id, ``config``, ``split``), or None for the user's own files."""
        return None

    def baseline(
        self, train: datasets.Dataset, examples: datasets.Dataset
    ) -> dict[str, float] | None:
        """Metrics of the task's trivial predictor on ``examples`` (learnt from ``train`` at
        most by counting): the floor any model must beat. None when the task has none."""
        return None


class LabelledTask(Task):
    """A task whose head predicts one of a fixed set of named labels (per example or per token).

    The label set is the task's: the names of ``label_names`` in that order are label ids
    0..n-1 in the data. A model whose head orders the same labels differently is reordered by
    :meth:`align_model` when it is loaded, so one order holds everywhere."""

    label_names: list[str] | None
    is_regression: bool = False

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names or [])

    def model_kwargs(self) -> dict[str, Any]:
        if self.is_regression:
            return {"num_labels": 1, "problem_type": "regression"}
        names = list(self.label_names or [])
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
        }

    def _fix_hint(self) -> str:
        return (
            "Fine-tune the teacher on this task first (set `finetune:` in the config) or pick a "
            f"model trained on {self.name}."
        )

    def check_model(self, model_config: Any) -> None:
        model_labels = int(getattr(model_config, "num_labels", 0))
        model_names = named_model_labels(model_config)
        if model_names is not None and not self.is_regression:
            known = {normalise_label_name(name) for name in model_names}
            missing = [
                name for name in self.label_names or [] if normalise_label_name(name) not in known
            ]
            if missing:
                raise DataError(
                    f"The data of task '{self.name}' have label(s) {missing} that the model's "
                    f"head lacks (its labels: {model_names}). {self._fix_hint()}"
                )
        if model_labels != self.num_labels:
            extra = ""
            if model_names is not None and model_labels > self.num_labels:
                unused = [
                    n
                    for n in model_names
                    if normalise_label_name(n)
                    not in {normalise_label_name(x) for x in self.label_names or []}
                ]
                extra = (
                    f" Its labels {unused} never occur in the data; if they are valid for this "
                    f"task, list the model's labels in task.labels: {model_names}."
                )
            raise DataError(
                f"The model has {model_labels} output(s) but task '{self.name}' needs "
                f"{self.num_labels}.{extra} {self._fix_hint()}"
            )

    def label_order(self, model_config: Any) -> list[int] | None:
        """``order[task_id]`` = the model's output index of that label, or None when they
        already line up (or the model's labels are unnamed)."""
        model_names = named_model_labels(model_config)
        if self.is_regression or model_names is None or not self.label_names:
            return None
        position = {normalise_label_name(name): i for i, name in enumerate(model_names)}
        order = [position.get(normalise_label_name(name)) for name in self.label_names]
        if None in order or len(order) != len(model_names):
            return None  # check_model reports this case
        ids = [int(i) for i in order if i is not None]
        return None if ids == list(range(len(ids))) else ids

    def align_model(self, model: torch.nn.Module) -> None:
        """Reorder a head whose named labels are this task's in another order; reset one whose
        named labels are another task's (a fine-tuning or student starting point: its weights
        mean nothing here; a teacher never gets this far, :meth:`check_model` refuses it);
        then give the model this task's label names."""
        order = self.label_order(model.config)
        names = named_model_labels(model.config)
        known = {normalise_label_name(n) for n in self.label_names or []}
        if order is not None:
            head = output_layer(model, len(order))
            index = torch.as_tensor(order, device=head.weight.device)
            with torch.no_grad():
                head.weight.copy_(head.weight.index_select(0, index))
                if head.bias is not None:
                    head.bias.copy_(head.bias.index_select(0, index))
        elif (
            names is not None
            and not self.is_regression
            and {normalise_label_name(n) for n in names} != known
        ):
            head = output_layer(model, self.num_labels)
            if hasattr(model, "_init_weights"):
                model._init_weights(head)
            else:
                head.reset_parameters()
        if not self.is_regression and self.label_names:
            kwargs = self.model_kwargs()
            model.config.id2label = kwargs["id2label"]
            model.config.label2id = kwargs["label2id"]


def example_inputs(
    task: Task | None,
    model_config: Any,
    batch_size: int,
    length: int,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``task``'s :meth:`Task.example_inputs`, or a text encoder's batch when the caller knows
    no task (a bare model folder, the architecture explorer)."""
    if task is None:
        return token_inputs(model_config, batch_size, length, generator)
    return task.example_inputs(model_config, batch_size, length, generator)
