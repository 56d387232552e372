"""The BERT layout and the families that share it: BERT (MiniLM, ...), RoBERTa (XLM-R,
CamemBERT, ...) and ELECTRA's discriminator.

``<base>.encoder.layer[i]`` holds ``attention.self.{query,key,value}`` (batch, seq, width),
``attention.output.dense`` (input: the per-head contexts), ``intermediate`` (the activated
feed-forward units) and ``output.dense``; embeddings at ``<base>.embeddings``. Attention is
softmax(QK^T / sqrt(d_head)) plus the padding mask, so attention knowledge rebuilt from the
hooked Q/K equals the model's own maps.
"""

from __future__ import annotations

from typing import Any

from kdformer.families.base import ModelFamily, Sliced, Tap, register_family

BERT_TAPS = {
    "query": Tap("attention.self.query"),
    "key": Tap("attention.self.key"),
    "value": Tap("attention.self.value"),
    "intermediate": Tap("intermediate"),
}
BERT_SLICED = {
    "attention.self.query": Sliced(("heads", "hidden")),
    "attention.self.key": Sliced(("heads", "hidden")),
    "attention.self.value": Sliced(("heads", "hidden")),
    "attention.output.dense": Sliced(("hidden", "heads")),
    "intermediate.dense": Sliced(("neurons", "hidden")),
    "output.dense": Sliced(("hidden", "neurons")),
}


def bert_layout(
    name: str, model_types: tuple[str, ...], family: type[ModelFamily] = ModelFamily, **fields: Any
) -> ModelFamily:
    """A family laid out like BERT; ``fields`` override or add to the BERT declaration, and
    ``family`` is a ModelFamily subclass for families with their own rules."""
    declared: dict[str, Any] = {
        "layers": "encoder.layer",
        "embeddings": "embeddings",
        "taps": dict(BERT_TAPS),
        "attention_output": "attention.output.dense",
        "ffn_output": "output.dense",
        "sliced": dict(BERT_SLICED),
        "pooler": "pooler",
    }
    declared.update(fields)
    return family(name=name, model_types=model_types, **declared)


BERT = register_family(bert_layout("BERT", ("bert",)))
ROBERTA = register_family(
    bert_layout(
        "RoBERTa",
        ("roberta", "xlm-roberta", "camembert", "data2vec-text"),
        positions_after_padding=True,
    )
)
ELECTRA = register_family(bert_layout("ELECTRA", ("electra",), width_keys=("embedding_size",)))
