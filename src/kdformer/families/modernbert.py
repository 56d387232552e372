"""ModernBERT (8k tokens; alternating global and sliding-window layers, rotary positions,
gated feed-forward): ``<base>.layers[i]`` with a fused ``attn.Wqkv`` (query, key and value as
three equal chunks), ``attn.Wo``, and ``mlp.Wi`` (input and gate as two chunks) ->
``mlp.Wo``, whose input is the activated, gated units. ``layer_types`` says which layers are
global; a student keeps its source layers' types.

Rotary embeddings are applied to Q/K inside attention, after the projection kdformer reads,
and local layers see a window, so attention maps are not rebuilt (attention knowledge is
refused); the relations (MiniLMv2) read the projected, unrotated Q/K/V. The first-token or
mean summary follows ``classifier_pooling``."""

from __future__ import annotations

from typing import Any

from kdformer.families.base import ModelFamily, Sliced, Tap, register_family


class ModernBertFamily(ModelFamily):
    """ModernBERT's pooling-dependent summary."""

    def summary_of(self, config: Any) -> str:
        return "mean" if getattr(config, "classifier_pooling", "cls") == "mean" else "first"


MODERNBERT = register_family(
    ModernBertFamily(
        name="ModernBERT",
        model_types=("modernbert",),
        layers="layers",
        embeddings="embeddings",
        taps={
            "query": Tap("attn.Wqkv", part=(0, 3)),
            "key": Tap("attn.Wqkv", part=(1, 3)),
            "value": Tap("attn.Wqkv", part=(2, 3)),
            "intermediate": Tap("mlp.Wo", io="input"),
        },
        attention_output="attn.Wo",
        ffn_output="mlp.Wo",
        sliced={
            "attn.Wqkv": Sliced(("heads", "hidden"), blocks=3),
            "attn.Wo": Sliced(("hidden", "heads")),
            "mlp.Wi": Sliced(("neurons", "hidden"), blocks=2),
            "mlp.Wo": Sliced(("hidden", "neurons")),
        },
        attention=None,
        attention_note="rotary positions are applied after the Q/K projections and local "
        "layers use a sliding window; use value_relation or qkv_relations",
        per_layer_keys=("layer_types",),
    )
)
