"""Local + global block attention: equal to full attention when the window covers the
sequence, equal to a hand-built masked attention otherwise, trainable, and loadable through
``from_pretrained(..., attn_implementation=...)`` once kdformer is imported."""

from __future__ import annotations

import math

import pytest
import torch
import transformers

import kdformer.attention  # noqa: F401  (registers local + global attention)
from kdformer.attention import IMPLEMENTATION, local_global_attention, use_local_global


def tiny_bert(seed: int = 0, **changes):
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=256, **changes,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(config).eval()


def batch(length: int, pad: int):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (2, length), generator=generator)
    mask = torch.ones(2, length, dtype=torch.long)
    if pad:
        mask[1, -pad:] = 0
    return ids, mask


@pytest.mark.parametrize("globals_", [0, 1, 3])
@pytest.mark.parametrize("length,pad", [(8, 0), (13, 4), (16, 5)])
def test_equals_full_attention_when_two_blocks_cover_the_sequence(length, pad, globals_):
    model = tiny_bert()
    ids, mask = batch(length, pad)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        use_local_global(model, block_size=8, global_tokens=globals_)
        assert model.config._attn_implementation == IMPLEMENTATION
        local = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    for a, b in zip(full.hidden_states, local.hidden_states, strict=True):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.logits, local.logits, atol=1e-5, rtol=1e-5)


def reference(query, key, value, real, block, globals_):
    """Masked full attention with the allowed pairs spelled out from the definition."""
    n = query.shape[2]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    near = (i // block - j // block).abs() <= 1
    allowed = (near | (j < globals_) | (i < globals_))[None] & real[:, None, :]
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return (scores.softmax(-1) @ value).transpose(1, 2)


@pytest.mark.parametrize("globals_", [0, 2])
def test_long_sequences_match_the_hand_built_block_pattern(globals_):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 8) for _ in range(3))
    real = torch.ones(2, 37, dtype=torch.bool)
    real[1, 30:] = False

    class Module(torch.nn.Module):
        config = type("C", (), {"lsg_block_size": 5, "lsg_global_tokens": globals_})()

    out, weights = local_global_attention(Module().eval(), q, k, v, real)
    assert weights is None and out.shape == (2, 37, 3, 8)
    expected = reference(q, k, v, real, 5, globals_)
    torch.testing.assert_close(out[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :30], expected[1, :30], atol=1e-5, rtol=1e-5)


def test_trains_and_saves_as_plain_bert(tmp_path):
    model = use_local_global(tiny_bert(), block_size=4, global_tokens=1).train()
    ids, mask = batch(30, 7)
    loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.save_pretrained(tmp_path)
    again = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path, attn_implementation=IMPLEMENTATION
    ).eval()
    assert type(again) is transformers.BertForSequenceClassification
    assert again.config.lsg_block_size == 4
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            again(input_ids=ids, attention_mask=mask).logits,
            model(input_ids=ids, attention_mask=mask).logits,
        )
