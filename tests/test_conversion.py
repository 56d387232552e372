"""Convert-then-distill's first step: a BERT/RoBERTa encoder converted to each efficient
attention gives the source's outputs on short inputs, with extended positions, and loads with
plain ``from_pretrained``."""

from __future__ import annotations

import pytest
import torch
import transformers

import kdformer.attention  # noqa: F401  (registers local + global attention)
from kdformer.attention import IMPLEMENTATION
from kdformer.config.base import ConfigError
from kdformer.conversion import convert, convert_checkpoint, extend_positions, position_offset
from kdformer.models import resolve_name

SHAPE = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip


def source(kind: str):
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(**SHAPE, max_position_embeddings=24)
        return transformers.BertModel(config).eval()
    config = transformers.RobertaConfig(**SHAPE, max_position_embeddings=26, pad_token_id=1)
    return transformers.RobertaModel(config).eval()


def inputs(length: int, pad_id: int, pad: int = 3):
    ids = torch.randint(5, 100, (2, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, -pad:] = 0
    ids[1, -pad:] = pad_id
    return {"input_ids": ids, "attention_mask": mask}


OPTIONS = {
    "longformer": {"window": 32},
    "bigbird": {"block_size": 4, "num_random_blocks": 2},  # 16 tokens: library runs full
    "nystromformer": {"num_landmarks": 16, "conv_kernel_size": 3},  # one landmark per token
    "local_global": {"block_size": 8, "global_tokens": 1},  # 16 tokens: two blocks
}
MAX = {"longformer": 64, "bigbird": 64, "nystromformer": 16, "local_global": 64}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("target", list(OPTIONS))
def test_converted_model_gives_the_source_outputs_on_short_inputs(kind, target):
    model = source(kind)
    converted = convert(model, target, MAX[target], **OPTIONS[target]).eval()
    batch = inputs(16, model.config.pad_token_id)
    if kind == "bert":
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        got = converted(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-4)


def test_positions_are_extended_by_repeating_the_learned_ones():
    model = source("roberta")  # offset 2 (padding index 1 + 1), 24 learned positions
    converted = convert(model, "longformer", 64, window=32)
    table = converted.embeddings.position_embeddings.weight
    original = model.embeddings.position_embeddings.weight
    assert table.shape[0] == 64 + 2
    assert position_offset(converted.config) == 2
    torch.testing.assert_close(table[2 + 30], original[2 + 30 % 24])
    torch.testing.assert_close(table[2:26], original[2:26])
    bert = source("bert")  # offset 0 -> Nyströmformer's offset 2
    table = extend_positions(bert.embeddings.position_embeddings.weight, 0, 50 + 2, 2)
    torch.testing.assert_close(table[2 + 25], bert.embeddings.position_embeddings.weight[1])


def test_longformer_global_projections_start_from_the_local_ones():
    converted = convert(source("bert"), "longformer", 64, window=32)
    attention = converted.encoder.layer[1].attention.self
    torch.testing.assert_close(attention.query_global.weight, attention.query.weight)
    torch.testing.assert_close(attention.value_global.bias, attention.value.bias)


@pytest.mark.parametrize("target", list(OPTIONS))
def test_checkpoint_conversion_loads_with_plain_from_pretrained(tmp_path, target):
    src = tmp_path / "src"
    model = source("bert")
    model.save_pretrained(src)
    transformers.AutoTokenizer.from_pretrained(resolve_name("minilm-l6")).save_pretrained(src)
    out = convert_checkpoint(src, target, tmp_path / "out", MAX[target], **OPTIONS[target])
    extra = {"attn_implementation": IMPLEMENTATION} if target == "local_global" else {}
    loaded = transformers.AutoModel.from_pretrained(out, **extra)
    expected = {"longformer": "LongformerModel", "bigbird": "BigBirdModel",
                "nystromformer": "NystromformerModel", "local_global": "BertModel"}  # fmt: skip
    assert type(loaded).__name__ == expected[target]
    assert transformers.AutoTokenizer.from_pretrained(out).model_max_length == MAX[target]


def test_unsupported_sources_and_bad_settings_are_refused():
    distil = transformers.DistilBertModel(
        transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    )
    with pytest.raises(ConfigError, match="BERT/RoBERTa sources.*'distilbert'"):
        convert(distil, "longformer", 64)
    with pytest.raises(ConfigError, match="positive even number"):
        convert(source("bert"), "longformer", 64, window=7)
    with pytest.raises(ConfigError, match="must divide the input length 60"):
        convert(source("bert"), "nystromformer", 60, num_landmarks=16)
    with pytest.raises(ConfigError, match="unknown conversion target 'reformer'"):
        convert(source("bert"), "reformer", 64)  # type: ignore[arg-type]
