"""A student's own vocabulary (kdformer.vocabulary): tokenizers trained on SST-2 with the
teacher's special tokens and template, saved and reused; what each token spells; and the new
word embeddings, each checked against the teacher rows it must be the mean of."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import GLUE, needs_data
from transformers import AutoTokenizer

from kdformer.config import ConfigError, StudentConfig, VocabularyConfig
from kdformer.models import load_tokenizer
from kdformer.vocabulary import (
    TokenForms,
    adopt_vocabulary,
    same_tokenizer,
    student_tokenizer,
    teacher_pieces,
    train_tokenizer,
)


def sst2_sentences(count: int) -> list[str]:
    lines = (GLUE / "SST-2" / "train.tsv").read_text().splitlines()[1 : count + 1]
    return [line.split("\t")[0] for line in lines]


@pytest.fixture(scope="module")
def teacher():
    return load_tokenizer("minilm-l6")


@pytest.fixture(scope="module")
def wordpiece(teacher, tmp_path_factory):
    """An 8,000-token WordPiece vocabulary trained on 20,000 SST-2 training sentences, saved and
    loaded back as a run keeps it."""
    folder = tmp_path_factory.mktemp("vocabulary")
    config = VocabularyConfig(train="wordpiece", size=8000)
    return student_tokenizer(config, teacher, lambda: sst2_sentences(20000), folder), folder


def test_the_config_takes_a_tokenizer_name_or_training_settings():
    assert StudentConfig(vocabulary="bert-base-cased").vocabulary.tokenizer == "bert-base-cased"
    trained = StudentConfig(vocabulary={"train": "bpe", "size": 500}).vocabulary
    assert trained.train == "bpe" and trained.size == 500 and trained.embeddings == "mean"
    with pytest.raises(ValueError, match="exactly one of tokenizer"):
        StudentConfig(vocabulary={"size": 500})
    with pytest.raises(ValueError, match="exactly one of tokenizer"):
        StudentConfig(vocabulary={"tokenizer": "x", "train": "bpe"})


@needs_data(GLUE)
def test_an_8k_wordpiece_vocabulary_trained_on_sst2(wordpiece, teacher):
    tokenizer, folder = wordpiece
    assert len(tokenizer) == 8000
    # the teacher's special tokens first, and its template with token type ids
    assert tokenizer.convert_ids_to_tokens(range(5)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                         "[MASK]"]  # fmt: skip
    assert tokenizer.pad_token_id == 0 and tokenizer.cls_token == "[CLS]"
    encoded = tokenizer("A Charming film", "second one")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == [
        "[CLS]", "a", "charming", "film", "[SEP]", "second", "one", "[SEP]",
    ]  # fmt: skip
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert tokenizer.model_max_length == teacher.model_max_length
    # the folder loads with plain transformers; the same settings and texts reuse it
    again = AutoTokenizer.from_pretrained(folder)
    assert again.get_vocab() == tokenizer.get_vocab()
    said: list[str] = []
    config = VocabularyConfig(train="wordpiece", size=8000)
    reused = student_tokenizer(config, teacher, lambda: sst2_sentences(20000), folder, said.append)
    assert said == [] and reused.get_vocab() == tokenizer.get_vocab()


@needs_data(GLUE)
@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_bpe_and_unigram_vocabularies_keep_the_template_and_clean_offsets(kind, teacher):
    trained = train_tokenizer(sst2_sentences(2000), VocabularyConfig(train=kind, size=600), teacher)
    assert 300 < len(trained) <= 600
    encoded = trained(["a charming film"], return_offsets_mapping=True)
    tokens = trained.convert_ids_to_tokens(encoded["input_ids"][0])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    text = "a charming film"
    spans = [text[a:b] for a, b in encoded["offset_mapping"][0][1:-1]]
    assert "".join(s.strip() for s in spans) == "acharmingfilm"
    if kind == "bpe":  # byte-level offsets leave out the space before a word
        assert all(s == s.strip() for s in spans)


def test_what_tokens_spell(teacher, tmp_path):
    wordpiece = TokenForms(teacher)
    assert wordpiece.surface("##ing") == ("ing", False)
    assert wordpiece.surface("film") == ("film", True)
    assert wordpiece.token("ing", False) == "##ing" and wordpiece.token("film", True) == "film"
    assert wordpiece.surface("##,")[1]  # punctuation always starts a word
    texts = ["the cat sat on the mat", "the thing is singing"] * 20
    bpe = TokenForms(train_tokenizer(texts, VocabularyConfig(train="bpe", size=300), teacher))
    assert bpe.surface("Ġthe") == ("the", True) and bpe.surface("ing") == ("ing", False)
    assert bpe.token("the", True) == "Ġthe"
    unigram = TokenForms(
        train_tokenizer(texts, VocabularyConfig(train="unigram", size=100), teacher)
    )
    assert unigram.surface("▁the") == ("the", True) and unigram.surface("ing") == ("ing", False)


@needs_data(GLUE)
def test_new_embeddings_are_the_mean_of_the_teachers_pieces(wordpiece, teacher):
    tokenizer, _ = wordpiece
    transformers.set_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(teacher), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    old = model.get_input_embeddings().weight.detach().clone()

    def row(token: str) -> torch.Tensor:
        return old[teacher.convert_tokens_to_ids(token)]

    pieces = teacher_pieces(tokenizer, teacher)
    named = {t: teacher.convert_ids_to_tokens(pieces[tokenizer.convert_tokens_to_ids(t)])
             for t in ("interestingly", "##ittle", "film", "[CLS]", "[PAD]")}  # fmt: skip
    assert named == {
        "interestingly": ["interesting", "##ly"],  # new word: the teacher's pieces
        "##ittle": ["##itt", "##le"],  # new word-inner piece: split inside a word too
        "film": ["film"],  # shared: its own row
        "[CLS]": ["[CLS]"],  # special: the teacher's of the same role
        "[PAD]": ["[PAD]"],
    }
    counts = adopt_vocabulary(model, tokenizer, teacher)
    new = model.get_input_embeddings().weight.detach()
    assert new.shape == (8000, 32) and model.config.vocab_size == 8000
    assert counts["tokens"] == 8000 and counts["shared"] + counts["pieces"] + counts["none"] == 8000

    def at(token: str) -> torch.Tensor:
        return new[tokenizer.convert_tokens_to_ids(token)]

    assert torch.equal(at("film"), row("film"))
    assert torch.equal(at("[CLS]"), row("[CLS]"))
    assert torch.allclose(at("interestingly"), (row("interesting") + row("##ly")) / 2)
    assert torch.allclose(at("##ittle"), (row("##itt") + row("##le")) / 2)
    # the model runs on the student's tokens
    batch = tokenizer(["an interestingly little film"], return_tensors="pt")
    assert model(**batch).logits.shape == (1, 2)


def test_the_teachers_own_tokenizer_changes_nothing(teacher):
    transformers.set_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(teacher), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    model = transformers.BertModel(config)
    before = model.get_input_embeddings().weight.detach().clone()
    again = load_tokenizer("minilm-l6")
    assert same_tokenizer(again, teacher)
    counts = adopt_vocabulary(model, again, teacher)
    assert counts["shared"] == len(teacher)
    assert torch.equal(model.get_input_embeddings().weight, before)


def test_a_tokenizer_without_offsets_is_refused(teacher):
    from kdformer.vocabulary import backend_json

    with pytest.raises(ConfigError, match="fast tokenizer"):
        backend_json(object())


@needs_data(GLUE)
def test_an_existing_tokenizer_is_loaded_by_folder_or_name(wordpiece, teacher, tmp_path):
    tokenizer, folder = wordpiece
    config = VocabularyConfig(tokenizer=str(folder))
    loaded = student_tokenizer(config, teacher, lambda: [], tmp_path / "unused")
    assert loaded.get_vocab() == tokenizer.get_vocab() and not (tmp_path / "unused").exists()
    by_name = student_tokenizer(VocabularyConfig(tokenizer="minilm-l6"), teacher, lambda: [])
    assert same_tokenizer(by_name, teacher)
    with pytest.raises(ConfigError, match="not found"):
        student_tokenizer(VocabularyConfig(tokenizer=str(tmp_path / "none")), teacher, list)
