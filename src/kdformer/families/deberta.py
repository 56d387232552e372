"""DeBERTa-v2/v3: BERT's layer layout with ``query_proj``/``key_proj``/``value_proj``, and
disentangled attention: content-to-position and position-to-content terms join QK^T, so the
maps cannot be rebuilt from the content projections alone (attention knowledge is refused;
the relations read the content Q/K/V). Relative-position projections, when the model has its
own (``share_att_key: false``), are sliced with the heads."""

from __future__ import annotations

from kdformer.families.base import Sliced, Tap
from kdformer.families.bert import BERT_SLICED, bert_layout, register_family

_HEADS = Sliced(("heads", "hidden"))

DEBERTA_V2 = register_family(
    bert_layout(
        "DeBERTa-v2",
        ("deberta-v2",),
        taps={
            "query": Tap("attention.self.query_proj"),
            "key": Tap("attention.self.key_proj"),
            "value": Tap("attention.self.value_proj"),
            "intermediate": Tap("intermediate"),
        },
        sliced={
            **{k: v for k, v in BERT_SLICED.items() if not k.startswith("attention.self.")},
            "attention.self.query_proj": _HEADS,
            "attention.self.key_proj": _HEADS,
            "attention.self.value_proj": _HEADS,
            "attention.self.pos_key_proj": _HEADS,
            "attention.self.pos_query_proj": _HEADS,
        },
        attention=None,
        attention_note="disentangled attention adds relative-position terms to QK^T; use "
        "value_relation or qkv_relations, which read its content Q/K/V",
        width_keys=("pooler_hidden_size",),
    )
)
