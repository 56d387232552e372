"""Sequence classification and regression: the nine GLUE tasks and the user's own files.

GLUE data comes either from the TSV files the official download script writes (``task.data_dir``,
works offline) or from the Hugging Face hub (``task.hub_dataset``). Either way the label ids are
those of the hub data set ``nyu-mll/glue``, so models fine-tuned on one source work on the other.
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torchmetrics import functional as tmf
from transformers import AutoModelForSequenceClassification

from kdformer.config.base import DataError
from kdformer.config.tasks.classification import ClassificationTaskConfig
from kdformer.features import OutputSpec
from kdformer.tasks.augment import augment_examples
from kdformer.tasks.base import LabelledTask, Purpose, Scorer, Split, load_hub_split

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# GLUE task table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueSpec:
    """Where one GLUE task's columns live in the TSV files and on the hub."""

    folder: str  # folder name the official download script writes
    hub_config: str  # configuration name in nyu-mll/glue
    text: str  # TSV column names (from the header row, or `header` below) ...
    label: str
    hub_text: str  # ... and the hub's column names for the same texts
    label_names: tuple[str, ...] | None  # in hub order, so index = label id; None: regression
    text_pair: str | None = None
    hub_text_pair: str | None = None
    metrics: tuple[str, ...] = ("accuracy",)  # the first one is the main metric
    eval_file: str = "dev.tsv"
    hub_eval_split: str = "validation"
    header: tuple[str, ...] | None = None  # column names for files without a header row


_PAIR = dict(
    text="sentence1", text_pair="sentence2", hub_text="sentence1", hub_text_pair="sentence2"
)
_NLI = ("entailment", "not_entailment")
_MNLI = dict(
    folder="MNLI",
    hub_config="mnli",
    label="gold_label",
    text="sentence1",
    text_pair="sentence2",
    hub_text="premise",
    hub_text_pair="hypothesis",
    label_names=("entailment", "neutral", "contradiction"),
)

GLUE_TASKS: dict[str, GlueSpec] = {
    "cola": GlueSpec(
        folder="CoLA", hub_config="cola", text="sentence", label="label", hub_text="sentence",
        label_names=("unacceptable", "acceptable"), metrics=("mcc", "accuracy"),
        header=("source", "label", "original_label", "sentence"),  # CoLA has no header row
    ),
    "sst2": GlueSpec(
        folder="SST-2", hub_config="sst2", text="sentence", label="label", hub_text="sentence",
        label_names=("negative", "positive"),
    ),
    "mrpc": GlueSpec(
        folder="MRPC", hub_config="mrpc", text="#1 String", text_pair="#2 String",
        label="Quality", hub_text="sentence1", hub_text_pair="sentence2",
        label_names=("not_equivalent", "equivalent"), metrics=("accuracy", "f1"),
    ),
    "stsb": GlueSpec(
        folder="STS-B", hub_config="stsb", **_PAIR, label="score",
        label_names=None, metrics=("pearson", "spearman"),
    ),
    "qqp": GlueSpec(
        folder="QQP", hub_config="qqp", text="question1", text_pair="question2",
        label="is_duplicate", hub_text="question1", hub_text_pair="question2",
        label_names=("not_duplicate", "duplicate"), metrics=("accuracy", "f1"),
    ),
    "mnli": GlueSpec(**_MNLI, eval_file="dev_matched.tsv", hub_eval_split="validation_matched"),
    "mnli-mm": GlueSpec(
        **_MNLI, eval_file="dev_mismatched.tsv", hub_eval_split="validation_mismatched"
    ),
    "qnli": GlueSpec(
        folder="QNLI", hub_config="qnli", text="question", text_pair="sentence", label="label",
        hub_text="question", hub_text_pair="sentence", label_names=_NLI,
    ),
    "rte": GlueSpec(folder="RTE", hub_config="rte", **_PAIR, label="label", label_names=_NLI),
    "wnli": GlueSpec(
        folder="WNLI", hub_config="wnli", **_PAIR, label="label",
        label_names=("not_entailment", "entailment"),
    ),
}  # fmt: skip

CUSTOM_TASK = "classification"
CLASSIFICATION_TASK_NAMES: list[str] = [*GLUE_TASKS, CUSTOM_TASK]


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def read_delimited(
    path: Path,
    wanted: dict[str, str],
    *,
    delimiter: str,
    quoting: int = csv.QUOTE_MINIMAL,
    header: tuple[str, ...] | None = None,
) -> dict[str, list[str]]:
    """Columns ``{out_name: values}`` for ``wanted = {out_name: column name}`` of a CSV/TSV file.

    ``header`` names the columns of files without a header row. Rows too short to hold every
    wanted column are skipped with a warning: the GLUE QQP files contain a few such broken lines.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
            names = list(header) if header else [name.strip() for name in next(reader, [])]
            if not names:
                raise DataError(f"{path} is empty; it needs a header row and at least one example.")
            missing = [col for col in wanted.values() if col not in names]
            if missing:
                raise DataError(
                    f"{path} has no column(s) {missing}; columns found: {names}. Point the task "
                    "at a file with these columns (or, for your own files, set "
                    "task.text_column / task.text_pair_column / task.label_column)."
                )
            index = {out: names.index(col) for out, col in wanted.items()}
            needed = max(index.values()) + 1
            columns: dict[str, list[str]] = {out: [] for out in wanted}
            skipped: list[int] = []  # line numbers (1-based, as an editor shows them)
            for row in reader:
                if len(row) < needed:
                    skipped.append(reader.line_num)
                    continue
                for out, i in index.items():
                    columns[out].append(row[i])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    if skipped:
        shown = ", ".join(str(n) for n in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        logger.warning(
            "%s: skipped %d malformed row(s) with fewer than %d fields, at line(s) %s",
            path, len(skipped), needed, shown,
        )  # fmt: skip
    if not columns[next(iter(wanted))]:
        raise DataError(f"{path} holds no examples (a header row only, or only malformed rows).")
    return columns


def _parse_json_records(path: Path) -> list[Any]:
    """The records of a JSON-lines file (or of a single JSON array), with the bad line named."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    if text.lstrip().startswith("["):
        lines = [(1, text)]
    else:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records = []
    for number, line in lines:
        try:
            loaded = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON ({exc}).") from exc
        records.extend(loaded if isinstance(loaded, list) else [loaded])
    return records


def read_json_lines(path: Path, wanted: dict[str, str]) -> dict[str, list[Any]]:
    """Like :func:`read_delimited` for JSON lines (a single JSON array is accepted too)."""
    records = _parse_json_records(path)
    if not all(isinstance(record, dict) for record in records):
        example = '{"text": "...", "label": "..."}'
        raise DataError(f"{path} must hold one JSON object per line, e.g. {example}")
    found = list(dict.fromkeys(key for record in records for key in record))
    missing = [col for col in wanted.values() if col not in found]
    if records and missing:
        raise DataError(
            f"{path} has no field(s) {missing}; fields found: {found}. Set task.text_column / "
            "task.text_pair_column / task.label_column to the names your file uses."
        )
    usable = [r for r in records if all(r.get(col) is not None for col in wanted.values())]
    if len(usable) < len(records):
        logger.warning(
            "%s: skipped %d record(s) with missing fields", path, len(records) - len(usable)
        )
    return {out: [r[col] for r in usable] for out, col in wanted.items()}


def glue_task_dir(data_dir: Path, folder: str) -> Path:
    """The task folder under a GLUE root, or ``data_dir`` itself when it already is that folder."""
    if not data_dir.is_dir():
        raise DataError(
            f"task.data_dir {data_dir} is not a folder. Set it to the GLUE root holding "
            f"{folder}/train.tsv (as the official download script writes it)."
        )
    wanted = folder.lower().replace("-", "")
    for child in data_dir.iterdir():
        if child.is_dir() and child.name.lower().replace("-", "") == wanted:
            return child
    if any(data_dir.glob("*.tsv")):
        return data_dir
    return data_dir / folder  # does not exist; the caller's error names the expected path


def _label_key(value: Any) -> str:
    """Canonical text of a label, so 1, "1" and " 1" are the same class."""
    text = str(value).strip()
    return str(int(text)) if re.fullmatch(r"[+-]?\d+", text) else text


def _sorted_label_names(values: Iterable[Any]) -> list[str]:
    """Distinct labels, ordered numerically when they are all integers, else alphabetically."""
    keys = set(map(_label_key, values))
    if all(re.fullmatch(r"-?\d+", key) for key in keys):
        return [str(k) for k in sorted(int(key) for key in keys)]
    return sorted(keys)


def encode_labels(values: list[Any], name_to_id: dict[str, int], path: Path) -> list[int]:
    """Class ids of raw label values; unknown values are reported all at once."""
    keys = [_label_key(value) for value in values]
    ids = [name_to_id.get(key, -1) for key in keys]
    unknown = sorted({key for key, i in zip(keys, ids, strict=True) if i < 0})
    if unknown:
        raise DataError(
            f"{path} has label(s) {unknown[:10]} that are not in the task's label set "
            f"{list(dict.fromkeys(name_to_id))}. Fix the file, or for your own data make sure "
            "the training file contains every label."
        )
    return ids


def encode_floats(values: list[Any], path: Path) -> list[float]:
    """Regression targets; values that are not numbers are reported all at once."""
    numbers: list[float] = []
    bad: list[str] = []
    for value in values:
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            bad.append(repr(value))
    if bad:
        raise DataError(f"{path} has non-numeric regression label(s) {bad[:10]}.")
    return numbers


# --------------------------------------------------------------------------------------------
# Metrics (torchmetrics functional API)
# --------------------------------------------------------------------------------------------

MetricFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _constant(values: torch.Tensor) -> bool:
    return values.numel() == 0 or bool((values == values.reshape(-1)[0]).all())


def matthews_corrcoef(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """MCC, 0 for a degenerate confusion matrix (constant predictions or constant gold labels),
    as GLUE's scorer and scikit-learn define it. torchmetrics 1.9 approximates that case with
    an epsilon and reports e.g. 2.56 for a constant predictor."""
    if _constant(preds) or _constant(target):
        return torch.tensor(0.0)
    return tmf.matthews_corrcoef(preds, target, task="multiclass", num_classes=num_classes)


def _correlation(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> MetricFn:
    """A correlation that is 0 (no linear relation) when either side is constant."""

    def compute(preds: torch.Tensor, target: torch.Tensor, _: int) -> torch.Tensor:
        if _constant(preds) or _constant(target):
            return torch.tensor(0.0)
        return fn(preds, target)

    return compute


METRICS: dict[str, MetricFn] = {
    "accuracy": lambda p, t, n: tmf.accuracy(p, t, task="multiclass", num_classes=n),
    "mcc": matthews_corrcoef,
    "f1": lambda p, t, n: tmf.f1_score(p, t, task="binary"),  # positive class = 1
    "f1_macro": lambda p, t, n: tmf.f1_score(
        p, t, task="multiclass", num_classes=n, average="macro"
    ),
    "pearson": _correlation(tmf.pearson_corrcoef),
    "spearman": _correlation(tmf.spearman_corrcoef),
}


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


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
                "files); other task types: set task.type to ner, qa or text."
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
        names = _sorted_label_names(self._read_custom(path)["label"])
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

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Scores of per-example logits (task label order) against gold label ids."""
        logits = np.asarray(logits)
        if self.is_regression:
            preds = torch.as_tensor(logits.reshape(-1), dtype=torch.float64)
            target = torch.as_tensor(np.asarray(labels).reshape(-1), dtype=torch.float64)
        else:
            preds = torch.as_tensor(logits.argmax(axis=-1), dtype=torch.long)
            target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        return {
            name: float(METRICS[name](preds, target, self.num_labels)) for name in self.metric_names
        }

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
