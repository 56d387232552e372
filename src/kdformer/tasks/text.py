"""Raw text, for task-agnostic distillation (the first stage of DistilBERT, TinyBERT, MiniLM).

Text comes from a folder of ``.txt`` files (or one file, or a glob) or a hub text data set. It
is cut into segments of about ``segment_chars`` characters at paragraph breaks; every
``1 / eval_fraction``-th segment of the corpus is held out for evaluation, so both splits
span the corpus (every long document gives segments to both). Tokenised segments are packed into blocks of exactly ``max_length`` tokens
([CLS] ... [SEP], documents separated by [SEP]), as BERT pre-training packs them.

With a teacher that has a masked-LM head (``mlm: auto`` looks at the checkpoint's
architecture) the student is a masked LM too: 15% of the tokens are masked (80% [MASK], 10% a
random token, 10% kept), the soft-logit knowledge compares both models' predictions at the
masked positions and the hard-label loss is the MLM loss. Without one (e.g. the offline
MiniLM-L6, a sentence encoder) the student is a bare encoder and only hidden-state, attention
and relation knowledge carry the signal, as in MiniLMv2. Either way the student saved is a
general student that any task starts from (``student.init: pretrained``).
"""

from __future__ import annotations

import glob
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoModel, AutoModelForMaskedLM

from kdformer.config.base import DataError
from kdformer.config.tasks.text import TextTaskConfig
from kdformer.features import OutputSpec
from kdformer.tasks.base import Purpose, Scorer, Split, Task, load_hub_split, right_padded

logger = logging.getLogger(__name__)

MLM_OUTPUTS = (OutputSpec("logits", label_key="labels", over="classes", rows="labelled"),)


COMPRESSED = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}
"""Suffixes of compressed text, and the tool that decompresses each."""
MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
"""The first bytes of a compressed file, by compressor."""


def text_files(value: Path, setting: str = "task.files") -> list[Path]:
    """The text files ``value`` names: a folder's .txt files (recursively), one file, or a
    glob's matches; ``setting`` names the config field in errors."""
    if value.is_dir():
        files = sorted(p for p in value.rglob("*.txt") if p.is_file())
        if not files:
            packed = sorted(p for p in value.rglob("*.txt.*") if p.suffix in COMPRESSED)
            names = ", ".join(p.name for p in packed[:3]) + (", ..." if len(packed) > 3 else "")
            hint = (
                f": its {len(packed)} compressed file(s) ({names}) must be decompressed first "
                f"(e.g. {COMPRESSED[packed[0].suffix]} -dk {value}/*{packed[0].suffix})"
                if packed
                else ""
            )
            raise DataError(f"{setting} {value} is a folder without .txt files{hint}.")
        return files
    if value.is_file():
        return [value]
    matches = sorted(Path(p) for p in glob.glob(str(value)) if Path(p).is_file())
    if not matches:
        raise DataError(f"{setting} {value} is not a file, a folder or a matching glob.")
    return matches


def read_text_file(path: Path) -> str:
    """A .txt file's text: UTF-8 (a byte-order mark dropped); a DataError naming the file for
    bytes that are not UTF-8 text (a binary file, another encoding), which decoding with
    replacement characters would turn into text to distil silently."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    packer = next((name for magic, name in MAGIC if data.startswith(magic)), None)
    if packer is not None:
        raise DataError(
            f"{path} is {packer}-compressed, and a text task reads plain UTF-8 .txt files: "
            f"decompress it first (e.g. {packer} -dk {path}) and give the .txt file"
        )
    if b"\x00" in data:
        raise DataError(
            f"{path} is not text (it holds NUL bytes, as binary files do): a text task reads "
            "plain UTF-8 .txt files; remove it from task.files"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): a "
            "text task reads plain UTF-8 .txt files. Convert it (e.g. iconv -f latin1 -t utf-8) "
            "or remove it from task.files"
        ) from None


PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
"""A blank line, also one that holds spaces (WikiText's " \\n") or ends Windows lines ("\\r\\n")."""


def segments(text: str, size: int) -> list[str]:
    """Paragraph-aligned pieces of about ``size`` characters (a paragraph longer than that is
    its own piece). Paragraphs end at blank lines, whitespace-only ones included: read as
    text, WikiText (" \\n" lines) or a Windows file was one paragraph, one segment."""
    out, current, length = [], [], 0
    for paragraph in PARAGRAPH_BREAK.split(text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if current and length + len(paragraph) > size:
            out.append("\n\n".join(current))
            current, length = [], 0
        current.append(paragraph)
        length += len(paragraph) + 2
    if current:
        out.append("\n\n".join(current))
    return out


def mask_tokens(
    ids: np.ndarray, tokenizer: Any, probability: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of one block: (masked ids, labels with -100 where nothing is predicted).
    Special tokens are never masked."""
    special = np.isin(ids, np.asarray(tokenizer.all_special_ids))
    chosen = (rng.random(ids.shape) < probability) & ~special
    labels = np.where(chosen, ids, -100)
    masked = ids.copy()
    roll = rng.random(ids.shape)
    masked[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_ids = rng.integers(0, len(tokenizer), ids.shape)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = random_ids[swap]
    return masked, labels


class MLMScorer(Scorer):
    """Masked-token accuracy and perplexity at the masked positions."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0
        self.nll = 0.0

    def add(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        labels = batch["labels"].to(outputs["logits"].device)
        keep = labels != -100
        logits = outputs["logits"][keep].float()
        gold = labels[keep]
        self.correct += int((logits.argmax(-1) == gold).sum())
        self.total += int(gold.numel())
        self.nll += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))

    def metrics(self) -> dict[str, float]:
        if not self.total:  # no masked token to score
            return {"mlm_accuracy": 0.0}
        return {
            "mlm_accuracy": self.correct / self.total,
            "perplexity": math.exp(self.nll / self.total),
        }


class NoScorer(Scorer):
    """A bare encoder has no predictions to score: its quality shows in the held-out
    distillation loss and on the tasks it is fine-tuned or distilled for later."""

    def add(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}


class TextTask(Task):
    """Raw text packed into blocks; masked-LM outputs when the teacher has an MLM head."""

    type = "text"
    config_class = TextTaskConfig
    config: TextTaskConfig
    finetune_refusal = (
        "a raw-text task has no labels to fine-tune the teacher on: remove `finetune:` (for "
        "two-stage distillation put the raw text in a `general:` section and keep the task)"
    )
    cross_tokenizer_refusal = (
        "raw text is packed into blocks of max_length tokens, and two tokenizers cut the text "
        "into different blocks (and a masked LM predicts its own vocabulary); distil the "
        "general student with the teacher's vocabulary, or give the task stage (classification, "
        "ner, qa, embedding) the student vocabulary without a `general:` section"
    )

    def __init__(self, config: TextTaskConfig, seed: int = 42):
        self.static_masking = False
        """Training blocks masked once (teacher cache) rather than anew every batch."""
        super().__init__(config, seed)
        self.mlm = config.mlm == "on"
        self._bind()

    def _bind(self) -> None:
        self.model_class = AutoModelForMaskedLM if self.mlm else AutoModel
        self.pipeline_tag = "fill-mask" if self.mlm else "feature-extraction"
        self.outputs = MLM_OUTPUTS if self.mlm else ()
        self.main_metric = "mlm_accuracy" if self.mlm else None
        self.table_metrics = ("mlm_accuracy",) if self.mlm else None  # perplexity: JSON only

    def missing_head_hint(self) -> str:
        return " (or set task.mlm: off to distil its encoder only)"

    def adapt_to_teacher(self, teacher_config: Any) -> None:
        if self.config.mlm != "auto":
            return
        architectures = getattr(teacher_config, "architectures", None) or []
        self.mlm = any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures)
        self._bind()

    # ---- reading ---------------------------------------------------------------------------

    def _documents(self) -> list[tuple[str, str]]:
        cfg = self.config
        if cfg.files is not None:
            docs = []
            for path in text_files(Path(cfg.files)):
                docs.append((path.name, read_text_file(path)))
            return docs
        if cfg.hub_dataset is None:
            raise DataError(
                "a text task needs task.files (a folder of .txt files, e.g. "
                "../shared/data/text/litbank-novels) or task.hub_dataset"
            )
        try:
            dataset = load_hub_split(cfg.hub_dataset, cfg.hub_config, cfg.hub_split)
        except Exception as exc:
            raise DataError(
                f"Could not load {cfg.hub_dataset} from the Hugging Face hub: {exc}. For offline "
                "use set task.files to a folder of .txt files."
            ) from exc
        if cfg.text_column not in dataset.column_names:
            raise DataError(
                f"{cfg.hub_dataset} has no column '{cfg.text_column}'; columns found: "
                f"{dataset.column_names}. Set task.text_column."
            )
        # Hub text sets hold a line or a paragraph per row: one document, kept in order.
        return [(cfg.hub_dataset, "\n\n".join(dataset[cfg.text_column]))]

    def read(self, split: Split) -> datasets.Dataset:
        every = max(2, round(1 / self.config.eval_fraction))
        rows: dict[str, list[Any]] = {"document": [], "text": []}
        found_text = False
        counted = 0  # over the whole corpus, so a folder of short files still holds some out
        for name, text in self._documents():
            pieces = segments(text, self.config.segment_chars)
            found_text = found_text or bool(pieces)
            for piece in pieces:
                counted += 1
                if (counted % every == 0) == (split == "eval"):
                    rows["document"].append(name)
                    rows["text"].append(piece)
        if not found_text:
            raise DataError(
                f"task '{self.name}' found no text in {self.config.files or self.config.hub_dataset}:"
                " every file is empty or whitespace."
            )
        if not rows["text"]:  # eval: too few segments for one in `every` to be held out
            raise DataError(self._nothing_held_out(counted, every))
        return datasets.Dataset.from_dict(rows)

    def _nothing_held_out(self, counted: int, every: int) -> str:
        """Why the evaluation split is empty and what gives it text: the text is cut into
        ``counted`` segments, too few to hold out one in ``every``."""
        cfg = self.config
        source = cfg.files or cfg.hub_dataset
        fixes = "give more text, or lower task.segment_chars (segments end at blank lines)"
        if counted >= 2:
            least = math.ceil(1e4 / counted) / 1e4  # rounded up: holds one out
            fixes = f"raise task.eval_fraction to at least {least:g}, or " + fixes
        return (
            f"task '{self.name}' holds no text out for evaluation: {source} gives {counted} "
            f"segment(s) of about task.segment_chars {cfg.segment_chars} characters, and one "
            f"in {every} (task.eval_fraction {cfg.eval_fraction}) is held out. To hold one out, "
            + fixes
        )

    def limit_samples(self, dataset: datasets.Dataset, split: Split) -> datasets.Dataset:
        return dataset  # the limits count packed blocks, applied in tokenize()

    # ---- tokenisation -----------------------------------------------------------------------

    def tokenize(
        self, dataset: datasets.Dataset, tokenizer: Any, purpose: Purpose = "train"
    ) -> datasets.Dataset:
        cfg = self.config
        start = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
        end = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
        body = cfg.max_length - len(start) - len(end)
        ids = tokenizer(list(dataset["text"]), add_special_tokens=False)["input_ids"]
        stream: list[int] = []
        previous = None
        for document, piece in zip(dataset["document"], ids):
            if previous is not None and document != previous and end:
                stream += end
            stream += piece
            previous = document
        blocks = [
            start + stream[i : i + body] + end for i in range(0, len(stream) - body + 1, body)
        ]
        if not blocks:
            raise DataError(
                f"the {'training' if purpose == 'train' else 'evaluation'} text of task "
                f"'{self.name}' is {len(stream)} tokens, less than one block of "
                f"{cfg.max_length}: give more text or lower task.max_length"
            )
        limit = cfg.max_train_samples if purpose == "train" else cfg.max_eval_samples
        if limit is not None and limit < len(blocks):
            if purpose == "train":
                chosen = np.sort(
                    np.random.default_rng(self.seed).choice(len(blocks), limit, replace=False)
                )
                blocks = [blocks[i] for i in chosen]
            else:
                blocks = blocks[:limit]
        data: dict[str, list[Any]] = {
            "input_ids": blocks,
            "attention_mask": [[1] * len(b) for b in blocks],
        }
        if "token_type_ids" in tokenizer.model_input_names:
            data["token_type_ids"] = [[0] * len(b) for b in blocks]
        if self.mlm and purpose == "eval":  # a fixed masking, so evaluations compare
            if tokenizer.mask_token_id is None:
                raise DataError(f"{type(tokenizer).__name__} has no mask token for MLM")
            rng = np.random.default_rng(self.seed)
            masked = [
                mask_tokens(np.asarray(b), tokenizer, cfg.mlm_probability, rng) for b in blocks
            ]
            data["input_ids"] = [m.tolist() for m, _ in masked]
            data["labels"] = [lab.tolist() for _, lab in masked]
        return datasets.Dataset.from_dict(data)

    def static_training_features(
        self, features: datasets.Dataset, tokenizer: Any
    ) -> datasets.Dataset:
        """Static masking (BERT's original recipe) instead of a new mask every batch: each block
        is masked once, seeded, so the teacher's masked-LM outputs can be cached."""
        if not self.mlm or "labels" in features.column_names:
            return features
        rng = np.random.default_rng(self.seed + 1)
        masked = [
            mask_tokens(np.asarray(ids), tokenizer, self.config.mlm_probability, rng)
            for ids in features["input_ids"]
        ]
        features = features.remove_columns("input_ids")
        features = features.add_column("input_ids", [m.tolist() for m, _ in masked])
        self.static_masking = True
        return features.add_column("labels", [labels.tolist() for _, labels in masked])

    def collator(
        self, tokenizer: Any, purpose: Purpose = "train", pad_to: int | None = None
    ) -> Any:
        from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

        tokenizer = right_padded(tokenizer)
        if self.mlm and purpose == "train" and not self.static_masking:
            return DataCollatorForLanguageModeling(
                tokenizer,
                mlm_probability=self.config.mlm_probability,
                pad_to_multiple_of=pad_to,
            )
        if self.mlm:
            from transformers import DataCollatorForTokenClassification

            return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to)
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to)

    def describe_data(self) -> str:
        parts = [f"{s} {len(d)} segments" for s, d in self._splits.items()]
        mode = "masked LM" if self.mlm else "encoder features (no MLM head)"
        return f"{self.name}: " + ", ".join(parts) + f"; {mode}"

    def scorer(self, features: datasets.Dataset, examples: datasets.Dataset) -> Scorer:
        return MLMScorer() if self.mlm else NoScorer()
