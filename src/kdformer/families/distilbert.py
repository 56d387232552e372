"""DistilBERT: ``<base>.transformer.layer[i]`` with ``attention.{q,k,v,out}_lin`` and
``ffn.{lin1,activation,lin2}``; the feed-forward width is ``hidden_dim``. Its attention is
BERT's softmax(QK^T / sqrt(d_head)) with the padding mask. It takes no token type ids."""

from __future__ import annotations

from kdformer.families.base import ModelFamily, Sliced, Tap, register_family

DISTILBERT = register_family(
    ModelFamily(
        name="DistilBERT",
        model_types=("distilbert",),
        layers="transformer.layer",
        embeddings="embeddings",
        taps={
            "query": Tap("attention.q_lin"),
            "key": Tap("attention.k_lin"),
            "value": Tap("attention.v_lin"),
            "intermediate": Tap("ffn.activation"),
        },
        attention_output="attention.out_lin",
        ffn_output="ffn.lin2",
        sliced={
            "attention.q_lin": Sliced(("heads", "hidden")),
            "attention.k_lin": Sliced(("heads", "hidden")),
            "attention.v_lin": Sliced(("heads", "hidden")),
            "attention.out_lin": Sliced(("hidden", "heads")),
            "ffn.lin1": Sliced(("neurons", "hidden")),
            "ffn.lin2": Sliced(("hidden", "neurons")),
        },
        intermediate_key="hidden_dim",
    )
)
