"""Cross-tokenizer alignment maps (kdformer.alignment), checked by hand: the MiniLM WordPiece
tokenizer against a small byte-level BPE trained on SST-2, on real SST-2 sentences, a CoNLL
sentence and a SQuAD window; and the tensors the maps build (pooling, first pieces, span
distributions, padding)."""

from __future__ import annotations

import pytest
import torch
from conftest import CONLL, GLUE, SQUAD, needs_data
from transformers import AutoTokenizer

from kdformer.alignment import (
    SPECIAL,
    CrossTokenizerCollator,
    UnitAlignment,
    encoding_spans,
    teacher_inputs,
    unit_maps,
)
from kdformer.config import VocabularyConfig
from kdformer.config.tasks.ner import NerTaskConfig
from kdformer.config.tasks.qa import QATaskConfig
from kdformer.features import OutputSpec
from kdformer.models import load_tokenizer
from kdformer.tasks import build_task
from kdformer.vocabulary import train_tokenizer


@pytest.fixture(scope="module")
def teacher():
    return load_tokenizer("minilm-l6")


@pytest.fixture(scope="module")
def bpe(teacher, tmp_path_factory):
    """Byte-level BPE, 2,000 tokens, trained on SST-2's first 2,000 training sentences."""
    lines = (GLUE / "SST-2" / "train.tsv").read_text().splitlines()[1:2001]
    trained = train_tokenizer(
        [line.split("\t")[0] for line in lines], VocabularyConfig(train="bpe", size=2000), teacher
    )
    folder = tmp_path_factory.mktemp("bpe")
    trained.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def maps(student, teacher, text, pair=None):
    texts = [text] if pair is None else [text, pair]
    s = student([text], None if pair is None else [pair], return_offsets_mapping=True)
    t = teacher([text], None if pair is None else [pair], return_offsets_mapping=True)
    s_units, t_units = unit_maps(encoding_spans(s, 0, texts), encoding_spans(t, 0, texts))
    return (
        student.convert_ids_to_tokens(s["input_ids"][0]),
        s_units,
        teacher.convert_ids_to_tokens(t["input_ids"][0]),
        t_units,
    )


# --------------------------------------------------------------------------------------------
# unit maps from spans
# --------------------------------------------------------------------------------------------


def test_units_are_the_smallest_spans_both_sides_cut():
    # "playing well": student pla|ying well, teacher play|ing well
    student = [(SPECIAL, 0, 0), (0, 0, 3), (0, 3, 7), (0, 8, 12), (SPECIAL, 0, 0)]
    teacher = [(SPECIAL, 0, 0), (0, 0, 4), (0, 4, 7), (0, 8, 12), (SPECIAL, 0, 0)]
    assert unit_maps(student, teacher) == ([0, 1, 1, 2, 3], [0, 1, 1, 2, 3])


def test_one_tokenizer_gives_one_unit_per_token():
    spans = [(SPECIAL, 0, 0), (0, 0, 4), (0, 4, 7), (0, 8, 12), (1, 0, 3), (SPECIAL, 0, 0)]
    assert unit_maps(spans, spans) == ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])


def test_specials_pair_by_order_or_only_the_first():
    # [CLS] a [SEP] [SEP] b [SEP] (RoBERTa-like) against [CLS] a [SEP] b [SEP]
    s, t = (SPECIAL, 0, 0), (SPECIAL, 0, 0)
    student = [s, (0, 0, 1), s, s, (1, 0, 1), s]
    teacher = [t, (0, 0, 1), t, (1, 0, 1), t]
    assert unit_maps(student, teacher) == ([0, 1, -1, -1, 2, -1], [0, 1, -1, 2, -1])
    # as many on both sides: each with its partner
    assert unit_maps(teacher, teacher) == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])


def test_text_one_side_lacks_is_no_unit():
    # the teacher was truncated after "a b"; the student's "c" has no partner; a token of no
    # text (None: a lone space) belongs to nothing
    student = [(0, 0, 1), (0, 2, 3), None, (0, 4, 5)]
    teacher = [(0, 0, 1), (0, 2, 3)]
    assert unit_maps(student, teacher) == ([0, 1, -1, -1], [0, 1])


# --------------------------------------------------------------------------------------------
# real sentences: MiniLM WordPiece against a trained byte-level BPE
# --------------------------------------------------------------------------------------------


@needs_data(GLUE)
def test_a_word_both_split_differently_is_one_unit(bpe, teacher):
    s_tokens, s_units, t_tokens, t_units = maps(bpe, teacher, "unflinchingly bleak and desperate ")
    assert s_tokens == ["[CLS]", "Ġun", "f", "lin", "ch", "ingly", "Ġb", "le", "ak", "Ġand",
                        "Ġdes", "per", "ate", "Ġ", "[SEP]"]  # fmt: skip
    assert t_tokens == ["[CLS]", "un", "##fl", "##in", "##ching", "##ly", "bleak", "and",
                        "desperate", "[SEP]"]  # fmt: skip
    # un | f+lin = ##fl+##in | ch+ingly = ##ching+##ly | bleak | and | desperate; the trailing
    # space token ("Ġ") spells no text and belongs to no unit
    assert s_units == [0, 1, 2, 2, 3, 3, 4, 4, 4, 5, 6, 6, 6, -1, 7]
    assert t_units == [0, 1, 2, 2, 3, 3, 4, 5, 6, 7]


@needs_data(GLUE)
def test_words_with_punctuation_align_on_the_pieces_both_cut(bpe, teacher):
    s_tokens, s_units, t_tokens, t_units = maps(
        bpe, teacher, "or doing last year 's taxes with your ex-wife . "
    )
    assert s_tokens == ["[CLS]", "Ġor", "Ġdo", "ing", "Ġlast", "Ġyear", "Ġ'", "s", "Ġt", "a",
                        "x", "es", "Ġwith", "Ġyour", "Ġex", "-", "w", "i", "fe", "Ġ.", "Ġ",
                        "[SEP]"]  # fmt: skip
    assert t_tokens == ["[CLS]", "or", "doing", "last", "year", "'", "s", "taxes", "with",
                        "your", "ex", "-", "wife", ".", "[SEP]"]  # fmt: skip
    assert s_units == [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 7, 7, 8, 9, 10, 11, 12, 12, 12, 13, -1, 14]
    assert t_units == list(range(15))


@needs_data(GLUE)
def test_a_pair_aligns_within_each_text(bpe, teacher):
    s_tokens, s_units, t_tokens, t_units = maps(
        bpe, teacher, "the film is a refreshingly serious look", "it 's slow -- very slow ."
    )
    assert s_tokens[9:] == ["[SEP]", "Ġit", "Ġ'", "s", "Ġslow", "Ġ--", "Ġvery", "Ġslow", "Ġ.",
                            "[SEP]"]  # fmt: skip
    assert t_tokens[9:] == ["[SEP]", "it", "'", "s", "slow", "-", "-", "very", "slow", ".",
                            "[SEP]"]  # fmt: skip
    assert s_units == list(range(19))  # refreshing|ly is cut alike on both sides
    # "--": one student token, two teacher tokens
    assert t_units == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 14, 15, 16, 17, 18]


CONLL_LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


@needs_data(GLUE, CONLL)
def test_ner_aligns_each_words_first_piece(bpe, teacher, tmp_path):
    head = tmp_path / "valid-head.txt"  # CoNLL-2003 validation, its first sentences
    head.write_text("\n".join((CONLL / "valid.txt").read_text().splitlines()[:40]) + "\n")
    config = NerTaskConfig(train_file=head, eval_file=head, labels=CONLL_LABELS, max_length=24)
    task = build_task(config)
    example = task.load("eval").select([1])
    assert example[0]["tokens"] == ["LONDON", "1996-08-30"] and example[0]["tags"] == [1, 0]
    (row,) = task.cross_tokenize(example, bpe, teacher, "eval")
    assert bpe.convert_ids_to_tokens(row["input_ids"]) == [
        "[CLS]", "Ġlo", "nd", "on", "Ġ19", "9", "6", "-", "0", "8", "-", "3", "0", "[SEP]",
    ]  # fmt: skip
    assert teacher.convert_ids_to_tokens(row["teacher_input_ids"]) == [
        "[CLS]", "london", "1996", "-", "08", "-", "30", "[SEP]",
    ]  # fmt: skip
    assert row["student_units"] == [0, 1, 1, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6, 7]
    assert row["teacher_units"] == [0, 1, 2, 3, 4, 5, 6, 7]
    # each word's first piece carries its tag on both sides (B-LOC = 1, O = 0)
    assert row["labels"] == [-100, 1, -100, -100, 0] + [-100] * 9
    assert row["teacher_labels"] == [-100, 1, 0, -100, -100, -100, -100, -100]


@needs_data(GLUE, SQUAD)
def test_a_qa_window_gives_the_teacher_the_same_stretch_of_context(bpe, teacher):
    task = build_task(QATaskConfig(train_file=SQUAD, max_length=48, doc_stride=16))
    example = task.load("train").select([0])
    features = task.cross_tokenize(example, bpe, teacher)
    second = features[1]  # the student's second window starts inside "Super Bowl 50"
    s_tokens = bpe.convert_ids_to_tokens(second["input_ids"])
    t_tokens = teacher.convert_ids_to_tokens(second["teacher_input_ids"])
    assert s_tokens[25:30] == ["[SEP]", "5", "0", "Ġwas", "Ġan"]
    assert t_tokens[12:16] == ["[SEP]", "50", "was", "an"]
    assert t_tokens[:13] == ["[CLS]", "which", "nfl", "team", "represented", "the", "afc",
                             "at", "super", "bowl", "50", "?", "[SEP]"]  # fmt: skip
    s_units, t_units = second["student_units"], second["teacher_units"]
    assert s_units[26:28] == [13, 13] and t_units[13] == 13  # "50" in the context
    assert t_units == list(range(len(t_tokens)))  # every teacher token has a partner here
    assert sorted(set(s_units) - {-1}) == t_units


# --------------------------------------------------------------------------------------------
# tensors on units
# --------------------------------------------------------------------------------------------


def unit_batch():
    # one example: student [CLS] pla ##ying well [SEP] pad; teacher [CLS] play ##ing well [SEP]
    return {
        "input_ids": torch.tensor([[1, 2, 3, 4, 5, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]]),
        "labels": torch.tensor([[-100, 7, -100, 8, -100, -100]]),
        "student_units": torch.tensor([[0, 1, 1, 2, 3, -1]]),
        "teacher_input_ids": torch.tensor([[11, 12, 13, 14, 15]]),
        "teacher_attention_mask": torch.ones(1, 5, dtype=torch.long),
        "teacher_labels": torch.tensor([[-100, 7, -100, -100, -100]]),  # "well" unlabelled
        "teacher_units": torch.tensor([[0, 1, 1, 2, 3]]),
        "teacher_row": torch.tensor([4]),
    }


def test_pooling_first_pieces_and_span_mass():
    batch = unit_batch()
    alignment = UnitAlignment(batch)
    hidden = torch.arange(12.0).view(1, 6, 2)  # student token i: (2i, 2i+1)
    pooled = alignment.pool(hidden, "student")
    assert pooled.tolist() == [[[0.0, 1.0], [3.0, 4.0], [6.0, 7.0], [8.0, 9.0]]]
    assert alignment.first(hidden, "student")[0, 1].tolist() == [2.0, 3.0]
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.25, 0.15]]))
    mass = alignment.span_logits(logits, "teacher").softmax(-1)
    assert torch.allclose(mass, torch.tensor([[0.1, 0.5, 0.25, 0.15]]))
    aligned = alignment.batch_for([OutputSpec("logits", "labels", rows="labelled")])
    assert aligned["attention_mask"].tolist() == [[1, 1, 1, 1]]
    # compared: units whose first pieces are labelled on both sides ("playing" only)
    assert aligned["labels"].tolist() == [[-100, 0, -100, -100]]


def test_the_teacher_reads_its_own_inputs_and_keeps_the_row_index():
    view = teacher_inputs(unit_batch())
    assert view["input_ids"].tolist() == [[11, 12, 13, 14, 15]]
    assert view["labels"].tolist() == [[-100, 7, -100, -100, -100]]
    assert view["teacher_row"].tolist() == [4]
    assert "student_units" not in view and "teacher_input_ids" not in view
    plain = {"input_ids": torch.ones(1, 2)}
    assert teacher_inputs(plain) is plain


def test_the_collator_pads_each_side_and_its_map(teacher):
    def pad(features):
        return teacher.pad(features, return_tensors="pt")

    features = [
        {"input_ids": [1, 2, 3], "teacher_input_ids": [5, 6], "student_units": [0, 1, 2],
         "teacher_units": [0, 1]},
        {"input_ids": [1], "teacher_input_ids": [5, 6, 7, 8], "student_units": [0],
         "teacher_units": [0, -1, -1, 1]},
    ]  # fmt: skip
    batch = CrossTokenizerCollator(pad, pad)(features)
    assert batch["input_ids"].shape == (2, 3) and batch["teacher_input_ids"].shape == (2, 4)
    assert batch["student_units"].tolist() == [[0, 1, 2], [0, -1, -1]]
    assert batch["teacher_units"].tolist() == [[0, 1, -1, -1], [0, -1, -1, 1]]


def test_maps_need_fast_tokenizers(teacher):
    from kdformer.alignment import check_fast
    from kdformer.config import ConfigError

    with pytest.raises(ConfigError, match="fast tokenizers"):
        check_fast(teacher, object())
