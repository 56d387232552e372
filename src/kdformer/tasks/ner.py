"""Token classification (named-entity recognition): CoNLL-2003, LitBank, GONERD-style JSON
lines, any CoNLL-style column file, or the hub's ``conll2003``.

Examples are word sequences with one IOB2 tag per word (sentences, or whole documents with
``unit: document``). Tokenisation labels the first word piece of each word (``label_all_tokens``
also labels the others, B- turned into I-); an input longer than ``max_length`` is cut into
windows that overlap by ``stride`` tokens, and each word is predicted from the one window where
its first piece has the most context on both sides, so every word gets exactly one prediction.
Metrics are entity-level precision, recall and F1 from ``seqeval`` (CoNLL scoring, or strict
IOB2 matching), overall and per entity type; the trivial baseline tags every word ``O``.
"""

from __future__ import annotations

import glob
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoModelForTokenClassification

from kdformer.alignment import (
    STUDENT_UNITS,
    TEACHER_UNITS,
    check_fast,
    teacher_columns,
    unit_maps,
    word_spans,
)
from kdformer.config.base import DataError
from kdformer.config.tasks.ner import NerTaskConfig
from kdformer.features import OutputSpec, teacher_key
from kdformer.tasks.base import LabelledTask, Purpose, Scorer, Split, load_hub_split, right_padded
from kdformer.tasks.ner_formats import (
    Document,
    detect_scheme,
    iob1_to_iob2,
    ordered_tags,
    read_columns,
    read_jsonl,
    read_litbank,
)

logger = logging.getLogger(__name__)

#: CoNLL-2003 file names per split, in the order they are looked for.
CONLL_FILES = {
    "train": ("train.txt", "train.conll", "eng.train"),
    "valid": ("valid.txt", "dev.txt", "valid.conll", "dev.conll", "eng.testa"),
    "test": ("test.txt", "test.conll", "eng.testb"),
}


def _expand(value: Path) -> list[Path]:
    """A file, every data file of a folder, or the matches of a glob, sorted."""
    if value.is_dir():
        files = [
            p
            for p in sorted(value.iterdir())
            if p.is_file() and p.suffix.lower() in {".txt", ".tsv", ".conll", ".jsonl", ".json"}
        ]
        if not files:
            raise DataError(f"{value} holds no .txt, .tsv, .conll or .jsonl files.")
        return files
    if value.is_file():
        return [value]
    matches = [Path(p) for p in sorted(glob.glob(str(value)))]
    if not matches:
        raise DataError(f"No data at {value}: it is not a file, a folder or a matching glob.")
    return matches


def words_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer that treats every pre-split word as starting after a space. Byte-level BPE
    tokenizers (RoBERTa, GPT-2) must be loaded with ``add_prefix_space=True`` for that, as
    ``run_ner.py`` loads them; otherwise each word is encoded as if it continued the previous
    one ("sings" -> "s", "ings" instead of "Ġsings")."""
    if getattr(tokenizer, "add_prefix_space", None) is not False:
        return tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(tokenizer.name_or_path, add_prefix_space=True)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{type(tokenizer).__name__} splits pre-tokenised words only with "
            f"add_prefix_space=True, and reloading it from '{tokenizer.name_or_path}' failed "
            f"({exc}); load the model's tokenizer from a folder or hub name"
        ) from exc


def held_out_documents(doc_ids: list[str], fraction: float) -> set[str]:
    """Deterministic document split: the ``fraction`` (at least one) of the documents whose
    name hashes lowest (SHA-1), so the split never depends on file order."""
    ranked = sorted(set(doc_ids), key=lambda d: hashlib.sha1(d.encode()).hexdigest())
    count = max(1, round(len(ranked) * fraction))
    if count >= len(ranked):
        raise DataError(
            f"{len(ranked)} document(s) are too few to hold {fraction:.0%} out for evaluation "
            "and train on the rest: give task.eval_file too"
        )
    return set(ranked[:count])


class NerScorer(Scorer):
    """Collects the predicted tag of every word's first piece, keeping for each word the window
    where that piece has the most context on both sides; scores words with seqeval."""

    def __init__(self, task: TokenClassificationTask, features: datasets.Dataset, examples: Any):
        self.task = task
        self.examples = examples
        self.example_index = list(features["example_index"])
        self.word_index = list(features["word_index"])
        self.best: list[dict[int, tuple[int, int]]] = [{} for _ in range(len(examples))]
        self.seen = 0

    def add(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        predicted = outputs["logits"].argmax(-1).cpu().numpy()
        for row in range(predicted.shape[0]):
            feature = self.seen + row
            words = self.word_index[feature]
            body = [p for p, w in enumerate(words) if w != -2]
            first, last = (body[0], body[-1]) if body else (0, 0)
            best = self.best[self.example_index[feature]]
            for position, word in enumerate(words):
                if word < 0:
                    continue
                context = min(position - first, last - position)
                if word not in best or context > best[word][0]:
                    best[word] = (context, int(predicted[row, position]))
        self.seen += predicted.shape[0]

    def predictions(self) -> tuple[list[list[str]], list[list[str]], int]:
        """Gold and predicted tag sequences, and the number of words no window covered (words
        the tokenizer turns into no piece at all; predicted O)."""
        names = self.task.label_names or []
        gold, pred, uncovered = [], [], 0
        for index, example in enumerate(self.examples):
            tags = [names[t] for t in example["tags"]]
            best = self.best[index]
            uncovered += sum(1 for w in range(len(tags)) if w not in best)
            gold.append(tags)
            pred.append([names[best[w][1]] if w in best else "O" for w in range(len(tags))])
        return gold, pred, uncovered

    def metrics(self) -> dict[str, float]:
        gold, pred, uncovered = self.predictions()
        if uncovered:
            logger.warning("%d word(s) produced no word piece and were predicted O", uncovered)
        return self.task.score(gold, pred)


def _refuse_repeated_labels(labels: list[str]) -> None:
    """task.labels lists one class per id: a name listed twice gives a class that no tag maps
    to (tags take the last id of their name), trained and scored as a class that never occurs."""
    ids: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        ids.setdefault(name, []).append(i)
    repeated = {name: at for name, at in ids.items() if len(at) > 1}
    if repeated:
        name, at = next(iter(repeated.items()))
        times = "twice" if len(at) == 2 else f"{len(at)} times"
        others = f"; also repeated: {list(repeated)[1:]}" if len(repeated) > 1 else ""
        raise DataError(
            f"task.labels lists {name!r} {times} (ids {', '.join(map(str, at[:-1]))} and "
            f"{at[-1]} of {labels}){others}: each name is one class, in id order, so a repeated "
            "name gives a class that no tag is mapped to. List each tag once."
        )


class TokenClassificationTask(LabelledTask):
    """Named-entity recognition (token classification) with sliding windows over long inputs."""

    type = "ner"
    config_class = NerTaskConfig
    model_class = AutoModelForTokenClassification
    pipeline_tag = "token-classification"
    outputs = (OutputSpec("logits", label_key="labels", over="classes", rows="labelled"),)
    side_columns = ("example_index", "word_index")
    main_metric = "f1"
    baseline_name = "all O"
    table_metrics = ("f1", "precision", "recall")
    config: NerTaskConfig

    def card_dataset(self) -> dict[str, str] | None:
        """The hub data set when the data came from the hub (own files: None)."""
        cfg = self.config
        if cfg.format != "hub" and (cfg.data_dir or cfg.train_file or cfg.eval_file):
            return None
        split = "validation" if cfg.eval_split == "valid" else cfg.eval_split
        return {"name": cfg.hub_dataset, "type": cfg.hub_dataset, "split": split}

    def __init__(self, config: NerTaskConfig, seed: int = 42):
        super().__init__(config, seed)
        self._documents: dict[str, list[Document]] = {}
        self._raw_splits: dict[str, tuple[list[str], list[list[str]], list[list[str]]]] = {}
        if config.labels:
            _refuse_repeated_labels(config.labels)
        self._label_names: list[str] | None = list(config.labels) if config.labels else None

    # ---- reading ---------------------------------------------------------------------------

    def _format(self, path: Path | None) -> str:
        if self.config.format != "auto":
            return self.config.format
        if path is None:
            return "hub"
        suffix = path.suffix.lower()
        return {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "litbank"}.get(suffix, "conll")

    def _read_files(self, paths: list[Path]) -> list[Document]:
        documents: list[Document] = []
        for path in paths:
            kind = self._format(path)
            if kind == "jsonl":
                documents += read_jsonl(path, self.config.labels)
            elif kind == "litbank":
                documents += read_litbank(path, self.config.layer, self.config.token_column)
            elif kind in ("conll", "column"):
                documents += read_columns(path, self.config.token_column, self.config.tag_column)
            else:
                raise DataError(f"task.format {kind} does not read files; unset task.format")
        return documents

    def _conll_file(self, split: str) -> Path | None:
        folder = self.config.data_dir
        assert folder is not None
        for name in CONLL_FILES[split]:
            if (folder / name).is_file():
                return folder / name
        return None

    def _sources(self, split: Split) -> tuple[list[Path], bool | None]:
        """The files of a split, and whether documents must still be split by hash (True: keep
        held-out documents, False: keep the others, None: use all)."""
        cfg = self.config
        explicit = cfg.train_file if split == "train" else cfg.eval_file
        other = cfg.eval_file if split == "train" else cfg.train_file
        alone = cfg.data_dir is None and (explicit is None) != (other is None)
        if alone and cfg.train_file is not None:
            # train_file alone serves both splits: hold documents out by hash.
            return _expand(Path(cfg.train_file)), split == "eval"
        if explicit is not None:
            return _expand(Path(explicit)), None
        if cfg.data_dir is None and other is not None:
            raise DataError(
                "task.train_file (or task.data_dir) is needed to train; task.eval_file alone is "
                "for evaluation"
            )
        if cfg.data_dir is None:
            raise DataError("task.data_dir, task.train_file or task.eval_file must be set")
        folder = Path(cfg.data_dir)
        if not folder.is_dir():
            raise DataError(f"task.data_dir {folder} is not a folder.")
        wanted = "train" if split == "train" else cfg.eval_split
        if any(self._conll_file(s) for s in CONLL_FILES):
            found = self._conll_file(wanted)
            if found is None:
                raise DataError(
                    f"{folder} has no {wanted} file (looked for {', '.join(CONLL_FILES[wanted])})."
                )
            return [found], None
        return _expand(folder), split == "eval"

    def _documents_of(self, split: Split) -> list[Document]:
        if split in self._documents:
            return self._documents[split]
        paths, held_out = self._sources(split)
        documents = self._read_files(paths)
        if held_out is not None:
            held = held_out_documents([d.id for d in documents], self.config.eval_fraction)
            documents = [d for d in documents if (d.id in held) == held_out]
        if not documents:
            raise DataError(
                f"The {split} split of task '{self.name}' has no documents"
                + (
                    " after the split by document: lower or raise task.eval_fraction"
                    if held_out is not None
                    else ""
                )
                + f" (read {', '.join(str(p) for p in paths)})."
            )
        self._documents[split] = documents
        return documents

    def _examples(
        self, documents: list[Document], iob1: bool = False
    ) -> list[tuple[str, list[str], list[str]]]:
        """(id, tokens, tags) per sentence or document. ``iob1``: each sentence's tags are
        rewritten as IOB2 before a document joins them, so an entity that ends a sentence and
        one of its type that starts the next (I- in IOB1) stay two entities."""

        def tags_of(sentence: Any) -> list[str]:
            return iob1_to_iob2(sentence.tags) if iob1 else sentence.tags

        out = []
        for doc in documents:
            if self.config.unit == "document":
                tokens = [t for s in doc.sentences for t in s.tokens]
                tags = [t for s in doc.sentences for t in tags_of(s)]
                out.append((doc.id, tokens, tags))
            else:
                single = len(doc.sentences) == 1  # e.g. a JSON record: keep its own id
                out += [
                    (doc.id if single else f"{doc.id}-{i}", s.tokens, tags_of(s))
                    for i, s in enumerate(doc.sentences)
                ]
        return out

    def _hub_split(self, split: Split) -> tuple[list[str], list[list[str]], list[list[str]]]:
        hub_split = (
            "train"
            if split == "train"
            else ("validation" if self.config.eval_split == "valid" else "test")
        )
        try:
            dataset = load_hub_split(self.config.hub_dataset, None, hub_split)
        except Exception as exc:  # network, auth, missing split: all mean "use local files"
            raise DataError(
                f"Could not load {self.config.hub_dataset} ({hub_split}) from the Hugging Face "
                f"hub: {exc}. For offline use set task.data_dir to a folder with CoNLL-2003's "
                "train.txt / valid.txt / test.txt (e.g. ../shared/data/conll2003)."
            ) from exc
        missing = [c for c in ("tokens", "ner_tags") if c not in dataset.column_names]
        if missing:
            raise DataError(
                f"{self.config.hub_dataset} has no column(s) {missing}; columns found: "
                f"{dataset.column_names}."
            )
        feature = dataset.features["ner_tags"]
        names = getattr(getattr(feature, "feature", None), "names", None)
        tags = [[names[t] if names else str(t) for t in row] for row in dataset["ner_tags"]]
        ids = [
            str(i) for i in (dataset["id"] if "id" in dataset.column_names else range(len(dataset)))
        ]
        return ids, list(dataset["tokens"]), tags

    def _raw(self, split: Split) -> tuple[list[str], list[list[str]], list[list[str]]]:
        """(ids, token lists, IOB2 tag lists) of a split."""
        paths_given = any(
            v is not None
            for v in (self.config.data_dir, self.config.train_file, self.config.eval_file)
        )
        scheme = self.config.scheme
        if self.config.format == "hub" or not paths_given:
            ids, tokens, tags = self._hub_split(split)  # one sentence a row
            if scheme == "auto":
                scheme = detect_scheme(tags)
            if scheme == "iob1":
                tags = [iob1_to_iob2(t) for t in tags]
            return ids, tokens, tags
        documents = self._documents_of(split)
        if scheme == "auto":  # sentence by sentence, as IOB1 is defined
            scheme = detect_scheme(s.tags for d in documents for s in d.sentences)
        rows = self._examples(documents, iob1=scheme == "iob1")
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    @property
    def label_names(self) -> list[str]:  # type: ignore[override]
        """task.labels, or O and then the training data's tags by type."""
        if self._label_names is None:
            try:
                _, _, tags = self._raw_cached("train")
            except DataError:
                _, _, tags = self._raw_cached("eval")  # evaluation-only setups
            self._label_names = ordered_tags(t for row in tags for t in row)
        return self._label_names

    def _raw_cached(self, split: Split) -> tuple[list[str], list[list[str]], list[list[str]]]:
        if split not in self._raw_splits:
            self._raw_splits[split] = self._raw(split)
        return self._raw_splits[split]

    def read(self, split: Split) -> datasets.Dataset:
        ids, tokens, tags = self._raw_cached(split)
        names = self.label_names
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted({t for row in tags for t in row if t not in index})
        if unknown:
            raise DataError(
                f"The {split} data of task '{self.name}' have tag(s) {unknown} outside the label "
                f"set {names}. Add them to task.labels, or train on data that has them."
            )
        return datasets.Dataset.from_dict(
            {"id": ids, "tokens": tokens, "tags": [[index[t] for t in row] for row in tags]},
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "tokens": datasets.Sequence(datasets.Value("string")),
                    "tags": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def describe_data(self) -> str:
        lengths = {s: len(d) for s, d in self._splits.items()}
        unit = "documents" if self.config.unit == "document" else "sentences"
        return f"{self.name}: " + ", ".join(f"{s} {n} {unit}" for s, n in lengths.items())

    # ---- tokenisation -----------------------------------------------------------------------

    def long_input_hint(self) -> str:
        return " (longer inputs are split into overlapping windows of max_length tokens)"

    def _inside_tags(self) -> list[int]:
        """For label_all_tokens: the id of I-X for each tag id (B-X -> I-X when it exists)."""
        names = self.label_names
        index = {n: i for i, n in enumerate(names)}
        return [
            index.get("I-" + n[2:], i) if n.startswith("B-") else i for i, n in enumerate(names)
        ]

    def tokenize(
        self,
        dataset: datasets.Dataset,
        tokenizer: Any,
        purpose: Purpose = "train",
        with_pieces: bool = False,
    ) -> datasets.Dataset:
        """Windows of ``max_length`` tokens; ``with_pieces`` also keeps every piece's word
        (``piece_words``, -2 for special tokens) and offsets within it (``piece_offsets``)."""
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(
                f"token classification needs a fast tokenizer (word ids), and "
                f"{type(tokenizer).__name__} is not one"
            )
        inside = self._inside_tags()
        cfg = self.config
        tokenizer = words_tokenizer(tokenizer)

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            full = tokenizer(
                batch["tokens"],
                is_split_into_words=True,
                add_special_tokens=False,
                return_offsets_mapping=True,
            )
            # The character span (within its word) of each word's first piece, per example.
            first_spans = []
            for i in range(len(batch["tokens"])):
                spans: dict[int, tuple[int, int]] = {}
                for word, span in zip(full.word_ids(i), full["offset_mapping"][i]):
                    if word is not None and word not in spans:
                        spans[word] = tuple(span)
                first_spans.append(spans)
            enc = tokenizer(
                batch["tokens"],
                is_split_into_words=True,
                truncation=True,
                max_length=cfg.max_length,
                stride=cfg.window_stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            labels, word_index, example_index = [], [], []
            pieces: dict[str, list[Any]] = {"piece_words": [], "piece_offsets": []}
            for f in range(len(enc["input_ids"])):
                if with_pieces:
                    pieces["piece_words"].append([-2 if w is None else w for w in enc.word_ids(f)])
                    pieces["piece_offsets"].append([list(o) for o in enc["offset_mapping"][f]])
                example = enc["overflow_to_sample_mapping"][f]
                tags = batch["tags"][example]
                spans = first_spans[example]
                row_labels, row_words = [], []
                seen: set[int] = set()
                for word, span in zip(enc.word_ids(f), enc["offset_mapping"][f]):
                    first = word is not None and word not in seen and tuple(span) == spans.get(word)
                    if word is not None:
                        seen.add(word)
                    if word is None:
                        row_labels.append(-100)
                        row_words.append(-2)  # special token
                    elif first:  # a window that starts inside a word has no first piece of it
                        row_labels.append(tags[word])
                        row_words.append(word)
                    else:
                        row_labels.append(inside[tags[word]] if cfg.label_all_tokens else -100)
                        row_words.append(-1)  # a later piece of a word
                labels.append(row_labels)
                word_index.append(row_words)
                example_index.append(indices[example])
            out = {
                k: v
                for k, v in enc.items()
                if k not in ("offset_mapping", "overflow_to_sample_mapping")
            }
            return {
                **out,
                "labels": labels,
                "word_index": word_index,
                "example_index": example_index,
                **(pieces if with_pieces else {}),
            }

        tokenized = dataset.map(
            encode,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            desc="Tokenizing (windows)",
        )
        return tokenized if purpose == "eval" else self.model_features(tokenized)

    def cross_tokenize(
        self,
        dataset: datasets.Dataset,
        tokenizer: Any,
        teacher_tokenizer: Any,
        purpose: Purpose = "train",
    ) -> datasets.Dataset:
        """The student's windows (as :meth:`tokenize` cuts them), and for each the words it
        covers tokenised by the teacher (``teacher_labels`` marking each word's first piece,
        as ``labels`` do the student's), with the unit maps between both: the logits are
        compared on each word's first piece, hidden states pooled per word."""
        check_fast(tokenizer, teacher_tokenizer)
        teacher = words_tokenizer(teacher_tokenizer)
        inside = self._inside_tags()
        tokens, tags = list(dataset["tokens"]), list(dataset["tags"])
        student = self.tokenize(dataset, tokenizer, "eval", with_pieces=True)

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            windows = []
            for example, words in zip(batch["example_index"], batch["piece_words"]):
                covered = [w for w in words if w >= 0]
                first, last = (min(covered), max(covered)) if covered else (0, -1)
                windows.append((example, first, tokens[example][first : last + 1]))
            enc = teacher(
                [words for _, _, words in windows],
                is_split_into_words=True,
                truncation=True,
                max_length=self.config.max_length,
                return_offsets_mapping=True,
            )
            s_units, t_units, t_labels = [], [], []
            for row, (example, first, _) in enumerate(windows):
                words = tokens[example]
                s_spans = word_spans(
                    [None if w < 0 else w for w in batch["piece_words"][row]],
                    batch["piece_offsets"][row],
                    words,
                )
                word_ids = enc.word_ids(row)
                t_spans = word_spans(word_ids, enc["offset_mapping"][row], words, first)
                s, t = unit_maps(s_spans, t_spans)
                s_units.append(s)
                t_units.append(t)
                seen: set[int] = set()
                row_labels = []
                for word in word_ids:
                    if word is None:
                        row_labels.append(-100)
                        continue
                    tag = tags[example][first + word]
                    if word not in seen:
                        row_labels.append(tag)
                    else:
                        row_labels.append(inside[tag] if self.config.label_all_tokens else -100)
                    seen.add(word)
                t_labels.append(row_labels)
            return {
                **teacher_columns(enc),
                teacher_key("labels"): t_labels,
                STUDENT_UNITS: s_units,
                TEACHER_UNITS: t_units,
            }

        features = student.map(encode, batched=True, desc="Tokenizing (teacher windows)")
        features = features.remove_columns(["piece_words", "piece_offsets"])
        return features if purpose == "eval" else self.model_features(features)

    def collator(
        self, tokenizer: Any, purpose: Purpose = "train", pad_to: int | None = None
    ) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(
            right_padded(tokenizer), pad_to_multiple_of=pad_to
        )

    # ---- scoring -----------------------------------------------------------------------------

    def scorer(self, features: datasets.Dataset, examples: datasets.Dataset) -> Scorer:
        return NerScorer(self, features, examples)

    def score(self, gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
        """Entity-level micro precision / recall / F1 overall and F1 per type (seqeval), and
        word accuracy."""
        from seqeval.metrics import accuracy_score, classification_report
        from seqeval.scheme import IOB2

        options: dict[str, Any] = {"mode": "strict", "scheme": IOB2} if self.config.strict else {}
        report = classification_report(gold, pred, output_dict=True, zero_division=0, **options)
        micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
        metrics = {
            "f1": float(micro["f1-score"]),
            "precision": float(micro["precision"]),
            "recall": float(micro["recall"]),
            "accuracy": float(accuracy_score(gold, pred)) if gold else 0.0,
        }
        for name, values in sorted(report.items()):
            if name not in ("micro avg", "macro avg", "weighted avg"):
                metrics[f"f1_{name}"] = float(values["f1-score"])
        return metrics

    def baseline(
        self, train: datasets.Dataset, examples: datasets.Dataset
    ) -> dict[str, float] | None:
        """Every word tagged O: no entity found, F1 0, word accuracy = the share of O words."""
        names = self.label_names
        gold = [[names[t] for t in row] for row in examples["tags"]]
        return self.score(gold, [["O"] * len(row) for row in gold])


__all__ = ["NerTaskConfig", "TokenClassificationTask"]
