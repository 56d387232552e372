"""Extractive question answering: SQuAD v1.1 and v2.0 (unanswerable questions), from the JSON
files or the hub's ``rajpurkar/squad`` / ``rajpurkar/squad_v2``.

A question and its context are cut into windows of ``max_length`` tokens that overlap by
``doc_stride`` (the question repeated in each); training labels each window with the answer's
start and end tokens, or [CLS] when the answer is not inside it (or there is none). The model's
start and end logits are distributions over positions; their n-best spans are mapped back to
the context through the tokenizer's character offsets (see :mod:`kdformer.tasks.squad`).

When only one SQuAD file is at hand (kdformer's offline data hold part of the v1.1 dev set)
``eval_fraction`` splits it by article, deterministically, so that no article is in both.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering

from kdformer.alignment import (
    STUDENT_UNITS,
    TEACHER_UNITS,
    check_fast,
    encoding_spans,
    offset_spans,
    teacher_columns,
    unit_maps,
)
from kdformer.config.base import DataError
from kdformer.config.tasks.qa import QATaskConfig
from kdformer.features import OutputSpec
from kdformer.tasks.base import Purpose, Scorer, Split, Task, load_hub_split
from kdformer.tasks.inputs import pair_inputs
from kdformer.tasks.long_qa import (
    add_distractors,
    detect_format,
    join_articles,
    read_hotpotqa,
    read_triviaqa,
)
from kdformer.tasks.squad import best_answer, find_answer, read_squad, squad_scores

logger = logging.getLogger(__name__)


def _article_bucket(title: str) -> str:
    return hashlib.sha1(title.encode()).hexdigest()


class QAScorer(Scorer):
    """Collects start/end logits per window; per question the best span over its windows."""

    def __init__(self, task: QuestionAnsweringTask, features: datasets.Dataset, examples: Any):
        self.task = task
        self.examples = examples
        self.example_index = list(features["example_index"])
        self.offsets = list(features["offset_mapping"])
        self.cls_index = list(features["cls_index"])
        self.windows: list[list[tuple[np.ndarray, np.ndarray, Any, int]]] = [[] for _ in examples]
        self.seen = 0

    def add(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        starts = outputs["start_logits"].float().cpu().numpy()
        ends = outputs["end_logits"].float().cpu().numpy()
        lengths = batch["attention_mask"].sum(-1).tolist()
        for row, length in enumerate(lengths):
            feature = self.seen + row
            self.windows[self.example_index[feature]].append(
                (
                    starts[row, :length],
                    ends[row, :length],
                    self.offsets[feature],
                    self.cls_index[feature],
                )
            )
        self.seen += len(lengths)

    def answers(self) -> list[Any]:
        """Per question its :class:`~kdformer.tasks.squad.Answer`: the prediction (as
        :meth:`predictions`), and the best span and no-answer score v2.0's best threshold uses."""
        cfg = self.task.config
        return [
            find_answer(
                windows,
                example["context"],
                cfg.n_best,
                cfg.max_answer_length,
                self.task.version_2,
                cfg.null_threshold,
            )
            for windows, example in zip(self.windows, self.examples)
        ]

    def predictions(self) -> list[str]:
        cfg = self.task.config
        return [
            best_answer(
                windows,
                example["context"],
                cfg.n_best,
                cfg.max_answer_length,
                self.task.version_2,
                cfg.null_threshold,
            )[0]
            for windows, example in zip(self.windows, self.examples)
        ]

    def metrics(self) -> dict[str, float]:
        golds = [a["text"] for a in self.examples["answers"]]
        answers = self.answers()
        predictions = [a.text for a in answers]
        if not self.task.version_2:
            return squad_scores(predictions, golds)
        na_probs, spans = [a.null_odds for a in answers], [a.span for a in answers]
        return squad_scores(predictions, golds, True, na_probs, spans)


class QuestionAnsweringTask(Task):
    """Extractive QA: sliding windows, n-best spans, official SQuAD exact match and F1."""

    type = "qa"
    config_class = QATaskConfig
    model_class = AutoModelForQuestionAnswering
    pipeline_tag = "question-answering"
    outputs = (
        OutputSpec("start_logits", label_key="start_positions", over="positions"),
        OutputSpec("end_logits", label_key="end_positions", over="positions"),
    )
    side_columns = ("example_index", "offset_mapping", "cls_index")
    main_metric = "f1"
    baseline_name = "first words"
    table_metrics = ("exact_match", "f1", "HasAns_f1", "NoAns_f1")
    config: QATaskConfig

    def card_dataset(self) -> dict[str, str] | None:
        """The hub data set when the data came from the hub (own files: None)."""
        cfg = self.config
        if cfg.train_file or cfg.eval_file:
            return None
        return {"name": cfg.hub_dataset, "type": cfg.hub_dataset, "split": "validation"}

    def __init__(self, config: QATaskConfig, seed: int = 42):
        super().__init__(config, seed)
        self.version_2 = (
            config.version_2
            if config.version_2 is not None
            else "v2" in config.hub_dataset.lower() and config.train_file is None
        )
        self.notes: list[str] = []

    # ---- reading ---------------------------------------------------------------------------

    def _file_rows(self, path: Path, split: Split) -> list[dict[str, Any]]:
        """A file's questions; for training, answers are checked against their offsets (the
        labels need them), for evaluation every gold text counts as given (the official
        scripts score texts only)."""
        setting = (
            "task.eval_file" if split == "eval" and self.config.eval_file else "task.train_file"
        )
        if Path(path).is_dir():
            found = sorted(p.name for p in Path(path).glob("*.json*"))[:5]
            raise DataError(
                f"{setting} {path} is a folder: give the JSON file of its questions"
                + (f" (it holds {', '.join(found)})" if found else " (it holds no .json file)")
            )
        if not Path(path).is_file():
            raise DataError(f"QA data file not found: {path}")
        layout = self.config.format
        if layout == "auto":
            layout = detect_format(Path(path))
        if layout != "squad":
            return self._long_rows(Path(path), layout)
        squad = read_squad(Path(path), check_offsets=split == "train")
        if not squad.rows:
            raise DataError(
                f"{path} holds no questions (its 'data' list has no article with a question): "
                f"give {setting} a SQuAD file with questions"
            )
        if self.config.version_2 is None and squad.version.startswith("v2"):
            self.version_2 = True
        self._refuse_v2_as_v1(str(path), squad.unanswerable, squad.version)
        rows = squad.rows
        if squad.repaired:
            self.notes.append(
                f"{path}: {len(squad.repaired)} answer offset(s) did not point at the answer "
                f"text and were moved to its nearest occurrence (e.g. {squad.repaired[:3]})"
            )
        if squad.unmatched:
            bad = set(squad.unmatched)
            share = len(bad) / max(1, len(rows))
            message = (
                f"{path}: {len(bad)} question(s) ({share:.1%}) have an answer whose text is "
                f"nowhere in the context (e.g. ids {sorted(bad)[:5]})"
            )
            if share > self.config.max_bad_answers:
                raise DataError(
                    message
                    + f", more than task.max_bad_answers ({self.config.max_bad_answers:.1%})."
                    " Check that answer_start counts characters of the context as stored, or "
                    "raise task.max_bad_answers to train without them."
                )
            self.notes.append(
                message + "; those answers are left out (questions left with no "
                "answer are not trained on)"
            )
        if self.config.distractor_paragraphs:
            return add_distractors(rows, self.config.distractor_paragraphs, self.seed)
        return join_articles(rows) if self.config.join_paragraphs else rows

    def _refuse_v2_as_v1(self, source: str, unanswerable: list[str], version: str = "") -> None:
        """SQuAD v2.0 data (unanswerable questions) with ``version_2: false`` would train as
        null answers and be scored by v1.1's rules: refuse them, before any training."""
        if self.config.version_2 is not False or not unanswerable:
            return
        said = f" (its version field says {version})" if version.startswith("v2") else ""
        raise DataError(
            f"{source} is SQuAD v2.0 data{said}: {len(unanswerable)} question(s) have no "
            f"answer (marked is_impossible, with an empty answers list or only empty answer "
            f"texts, e.g. ids "
            f"{unanswerable[:3]}), and task.version_2 is false, which would train them as null "
            "answers and score them by v1.1's rules. Set task.version_2: true (or leave it "
            "unset: it is detected from the data), or remove the unanswerable questions."
        )

    def _long_rows(self, path: Path, layout: str) -> list[dict[str, Any]]:
        """HotpotQA or TriviaQA questions as long-context rows; what is left out is noted."""
        if layout == "hotpotqa":
            read = read_hotpotqa(path)
            if read.yes_no:
                self.notes.append(
                    f"{path}: {len(read.yes_no)} yes/no question(s) left out (no answer span; "
                    "extractive QA has no answer-type head)"
                )
        else:
            read = read_triviaqa(path, self.config.evidence_dir)
        if read.unanswered:
            self.notes.append(
                f"{path}: {len(read.unanswered)} question(s) left out: no answer (an empty or "
                f"missing 'answer' field, e.g. {read.unanswered[:3]})"
            )
        if read.unmatched:
            self.notes.append(
                f"{path}: {len(read.unmatched)} question(s) left out: answer text found nowhere "
                f"in the context (e.g. {read.unmatched[:3]})"
            )
        if not read.rows:
            raise DataError(f"{path}: no question with an answer span in its context")
        return read.rows

    def _hub_rows(self, split: Split) -> list[dict[str, Any]]:
        hub_split = "train" if split == "train" else "validation"
        try:
            dataset = load_hub_split(self.config.hub_dataset, None, hub_split)
        except Exception as exc:  # network, auth, missing split
            raise DataError(
                f"Could not load {self.config.hub_dataset} ({hub_split}) from the Hugging Face "
                f"hub: {exc}. For offline use set task.train_file (and task.eval_file) to SQuAD "
                "JSON files (e.g. ../shared/data/squad/dev-v1.1-part-a.json)."
            ) from exc
        rows = [
            {
                "id": str(r["id"]),
                "title": r.get("title", ""),
                "context": r["context"],
                "question": r["question"],
                "answers": {
                    "text": list(r["answers"]["text"]),
                    "answer_start": list(r["answers"]["answer_start"]),
                },
                "impossible": not r["answers"]["text"],
            }
            for r in dataset
        ]
        unanswerable = [r["id"] for r in rows if r["impossible"]]
        self._refuse_v2_as_v1(f"{self.config.hub_dataset} ({hub_split})", unanswerable)
        return rows

    def read(self, split: Split) -> datasets.Dataset:
        cfg = self.config
        if cfg.train_file is None and cfg.eval_file is None:
            rows = self._hub_rows(split)
        elif split == "eval" and cfg.eval_file is not None:
            rows = self._file_rows(cfg.eval_file, split)
        elif split == "train" and cfg.train_file is None:
            raise DataError(
                "task.train_file is needed to train (task.eval_file alone is for evaluation)"
            )
        elif split == "train" and cfg.eval_file is not None:
            rows = self._file_rows(cfg.train_file, split)
        else:  # train_file alone serves both splits, split by article
            assert cfg.train_file is not None
            rows = self._split_by_article(self._file_rows(cfg.train_file, split), split)
        if split == "train":
            rows = [r for r in rows if r["answers"]["text"] or r["impossible"]]
        if self.config.version_2 is None and any(r["impossible"] for r in rows):
            self.version_2 = True
        if not rows:  # e.g. every answer of a train_file nowhere in its context
            raise DataError(
                f"The {split} split of task '{self.name}' has no question"
                + (" with an answer to train on" if split == "train" else "")
                + "."
            )
        return datasets.Dataset.from_list(
            rows,
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "title": datasets.Value("string"),
                    "context": datasets.Value("string"),
                    "question": datasets.Value("string"),
                    "answers": {
                        "text": datasets.Sequence(datasets.Value("string")),
                        "answer_start": datasets.Sequence(datasets.Value("int64")),
                    },
                    "impossible": datasets.Value("bool"),
                }
            ),
        )

    def held_out_titles(self, titles: list[str]) -> set[str]:
        """The articles held out for evaluation: the eval_fraction (at least one) of the
        distinct titles whose SHA-1 is lowest, so the split never depends on file order."""
        distinct = sorted(set(titles), key=_article_bucket)
        count = max(1, round(len(distinct) * self.config.eval_fraction))
        if count >= len(distinct):
            raise DataError(
                f"The SQuAD file has {len(distinct)} article(s): too few to hold "
                f"{self.config.eval_fraction:.0%} out for evaluation and train on the rest. Give "
                "task.eval_file too."
            )
        return set(distinct[:count])

    def _split_by_article(self, rows: list[dict[str, Any]], split: Split) -> list[dict[str, Any]]:
        held = self.held_out_titles([r["title"] for r in rows])
        keep = [r for r in rows if (r["title"] in held) == (split == "eval")]
        articles = len({r["title"] for r in keep})
        note = f"{split}: {articles} article(s), {len(keep)} question(s) (split by article)"
        if note not in self.notes:
            self.notes.append(note)
        return keep

    def describe_data(self) -> str:
        return super().describe_data() + ("; " + "; ".join(self.notes) if self.notes else "")

    # ---- tokenisation -----------------------------------------------------------------------

    def long_input_hint(self) -> str:
        return " (longer contexts are split into overlapping windows of max_length tokens)"

    def tokenize(
        self,
        dataset: datasets.Dataset,
        tokenizer: Any,
        purpose: Purpose = "train",
        with_pieces: bool = False,
    ) -> datasets.Dataset:
        """Windows of the context after the question; ``with_pieces`` also keeps every token's
        segment (``piece_segments``: 0 question, 1 context, -1 special), offsets
        (``piece_offsets``) and example (``piece_example``)."""
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(
                f"extractive QA needs a fast tokenizer (offsets), and {type(tokenizer).__name__} "
                "is not one"
            )
        cfg = self.config

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            questions = [q.lstrip() for q in batch["question"]]
            try:  # question first, the context cut into windows
                enc = tokenizer(
                    questions,
                    batch["context"],
                    truncation="only_second",
                    max_length=cfg.max_length,
                    stride=cfg.window_stride,
                    return_overflowing_tokens=True,
                    return_offsets_mapping=True,
                )
            except BaseException as exc:  # tokenizers panics on a question too long to fit
                if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                    raise  # Ctrl-C and exits; pyo3's PanicException is no Exception
                self.check_windows(batch, tokenizer, purpose)
                raise DataError(
                    f"could not cut questions and contexts into windows of {cfg.max_length} "
                    f"tokens with a stride of {cfg.window_stride} ({exc}): raise task.max_length or "
                    "lower task.doc_stride (a question must leave room for context)"
                ) from exc
            starts, ends, offsets, example_index, cls_index = [], [], [], [], []
            for f in range(len(enc["input_ids"])):
                example = enc["overflow_to_sample_mapping"][f]
                sequence = enc.sequence_ids(f)
                span = [
                    (a, b) if s == 1 else (-1, -1)
                    for s, (a, b) in zip(sequence, enc["offset_mapping"][f])
                ]
                offsets.append(span)
                example_index.append(indices[example])
                answers = batch["answers"][example]
                cls = (
                    enc["input_ids"][f].index(tokenizer.cls_token_id)
                    if tokenizer.cls_token_id in enc["input_ids"][f]
                    else 0
                )
                cls_index.append(cls)
                if not answers["text"]:
                    starts.append(cls)
                    ends.append(cls)
                    continue
                begin = answers["answer_start"][0]
                finish = begin + len(answers["text"][0])
                inside = [i for i, (a, _) in enumerate(span) if a >= 0]
                if not inside or span[inside[0]][0] > begin or span[inside[-1]][1] < finish:
                    starts.append(cls)  # the answer is not (wholly) in this window
                    ends.append(cls)
                    continue
                start = next(i for i in inside if span[i][1] > begin)
                end = next(i for i in reversed(inside) if span[i][0] < finish)
                starts.append(start)
                ends.append(end)
            out = {
                k: v
                for k, v in enc.items()
                if k not in ("offset_mapping", "overflow_to_sample_mapping")
            }
            if with_pieces:
                out["piece_segments"] = [
                    [-1 if s is None else s for s in enc.sequence_ids(f)]
                    for f in range(len(enc["input_ids"]))
                ]
                out["piece_offsets"] = [[list(o) for o in row] for row in enc["offset_mapping"]]
                out["piece_example"] = [indices[e] for e in enc["overflow_to_sample_mapping"]]
            if purpose == "eval":
                return {
                    **out,
                    "example_index": example_index,
                    "offset_mapping": offsets,
                    "cls_index": cls_index,
                }
            return {**out, "start_positions": starts, "end_positions": ends}

        return dataset.map(
            encode,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            desc="Tokenizing (windows)",
        )

    def cross_tokenize(
        self,
        dataset: datasets.Dataset,
        tokenizer: Any,
        teacher_tokenizer: Any,
        purpose: Purpose = "train",
    ) -> datasets.Dataset:
        """The student's windows (as :meth:`tokenize` cuts them), and for each the question and
        the stretch of context it covers tokenised by the teacher, with the unit maps between
        both: the start and end distributions are compared over the units (words) both
        windows hold, through their character offsets."""
        check_fast(tokenizer, teacher_tokenizer)
        questions = [q.lstrip() for q in dataset["question"]]
        contexts = list(dataset["context"])
        student = self.tokenize(dataset, tokenizer, purpose, with_pieces=True)

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            windows = []
            for example, segments, offsets in zip(
                batch["piece_example"], batch["piece_segments"], batch["piece_offsets"]
            ):
                context = [o for s, o in zip(segments, offsets) if s == 1]
                start = min((o[0] for o in context), default=0)
                end = max((o[1] for o in context), default=0)
                windows.append((example, start, end))
            enc = teacher_tokenizer(
                [questions[e] for e, _, _ in windows],
                [contexts[e][a:b] for e, a, b in windows],
                truncation="only_second",
                max_length=self.config.max_length,
                return_offsets_mapping=True,
            )
            s_units, t_units = [], []
            for row, (example, start, _) in enumerate(windows):
                texts = (questions[example], contexts[example])
                s_spans = offset_spans(
                    [None if s < 0 else s for s in batch["piece_segments"][row]],
                    batch["piece_offsets"][row],
                    texts,
                )
                t_spans = encoding_spans(enc, row, texts, (0, start))
                s, t = unit_maps(s_spans, t_spans)
                s_units.append(s)
                t_units.append(t)
            return {**teacher_columns(enc), STUDENT_UNITS: s_units, TEACHER_UNITS: t_units}

        features = student.map(encode, batched=True, desc="Tokenizing (teacher windows)")
        return features.remove_columns(["piece_segments", "piece_offsets", "piece_example"])

    def check_inputs(self, tokenizer: Any) -> None:
        """Refuse, before any training or evaluation, a question too long for its windows."""
        for split, examples in self._splits.items():
            self.check_windows(examples, tokenizer, split)

    def check_windows(self, examples: Any, tokenizer: Any, split: str) -> None:
        """A DataError when a question of ``examples`` (columns id, question, context) is so
        long that a window of ``max_length`` tokens leaves no more room for its context than
        the ``doc_stride`` tokens consecutive windows share: its context could never be cut
        into windows (the tokenizers library panics). Contexts that fit whole are fine."""
        cfg = self.config
        special = tokenizer.num_special_tokens_to_add(pair=True)
        questions = [q.lstrip() for q in examples["question"]]
        lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
        limit = cfg.max_length - special - cfg.window_stride - 1  # longest question with room
        suspects = [i for i, n in enumerate(lengths) if n > limit]
        if not suspects:
            return
        contexts = [examples["context"][i] for i in suspects]
        context_lengths = tokenizer(contexts, add_special_tokens=False)["input_ids"]
        bad = [
            i
            for i, context in zip(suspects, context_lengths, strict=True)
            if lengths[i] + len(context) + special > cfg.max_length
        ]
        if not bad:
            return
        worst = max(bad, key=lambda i: lengths[i])
        n = lengths[worst]
        room = cfg.max_length - n - special

        def fits(max_length: int) -> bool:
            stride = cfg.doc_stride if cfg.doc_stride is not None else max_length // 3
            return max_length - n - special > stride

        needed = next(m for m in itertools.count(n + special + 1) if fits(m))
        stride_fix = f", or set task.doc_stride to at most {room - 1}" if room > 1 else ""
        raise DataError(
            f"{len(bad)} {split} question(s) are too long for windows of task.max_length "
            f"{cfg.max_length} tokens: the longest, id '{examples['id'][worst]}', has {n} tokens, "
            f"which leaves {max(room, 0)} tokens of its context per window ({special} are special "
            f"tokens), not more than the {cfg.window_stride} tokens consecutive windows share "
            f"(task.doc_stride), so its context cannot be cut into windows. Raise "
            f"task.max_length to at least {needed}{stride_fix}, or leave such questions out of "
            "the data"
        )

    # ---- scoring -----------------------------------------------------------------------------

    def check_model(self, model_config: Any) -> None:
        labels = int(getattr(model_config, "num_labels", 2))
        if labels != 2:
            raise DataError(
                f"An extractive QA head has 2 outputs (start, end); this model's head has {labels}."
            )

    def scorer(self, features: datasets.Dataset, examples: datasets.Dataset) -> Scorer:
        return QAScorer(self, features, examples)

    def example_inputs(
        self,
        model_config: Any,
        batch_size: int,
        length: int,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Question-context pairs (:func:`kdformer.tasks.inputs.pair_inputs`), as the model
        answers them."""
        return pair_inputs(model_config, batch_size, length, generator)

    def baseline(
        self, train: datasets.Dataset, examples: datasets.Dataset
    ) -> dict[str, float] | None:
        """The first k words of every context, k the median length in words of the training
        answers (a reader that reads nothing); with unanswerable questions, also answering
        nothing, whichever scores higher."""
        lengths = [len(a["text"][0].split()) for a in train["answers"] if a["text"]]
        k = int(np.median(lengths)) if lengths else 3
        golds = [a["text"] for a in examples["answers"]]
        guess = [" ".join(c.split()[:k]) for c in examples["context"]]
        scores = squad_scores(guess, golds, self.version_2)
        if self.version_2:
            empty = squad_scores([""] * len(golds), golds, True)
            if empty["f1"] > scores["f1"]:
                return empty
        return scores
