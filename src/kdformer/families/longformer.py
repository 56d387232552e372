"""Longformer: BERT's layer layout (RoBERTa weights) with sliding-window attention of
``attention_window[i]`` tokens per layer (w/2 each side) and separate ``*_global``
projections for tokens with global attention. Its self-attention runs sequence-first, so the
hooked Q/K/V are (seq, batch, width), and inputs are padded inside the model to a multiple of
the window (kdformer trims the taps back to the batch length).

Attention knowledge is *banded*: each query's distribution over the keys of its own window
(|i - j| <= w/2), which is Longformer's local attention for tokens without global attention;
the rows of global tokens are compared over the same band, and global keys outside a query's
window are not compared."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdformer.config.base import ConfigError
from kdformer.families.base import ModelFamily, Sliced, Tap
from kdformer.families.bert import BERT_SLICED, bert_layout, register_family

_HEADS = Sliced(("heads", "hidden"))


def _windows(config: Any) -> list[int]:
    window = config.attention_window
    if isinstance(window, int):
        return [window] * int(config.num_hidden_layers)
    return list(window)


def _default_global(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Without a caller's global mask: [CLS] global, and with a QA head the question too."""
    if kwargs.get("global_attention_mask") is None:
        ids = kwargs.get("input_ids")
        ids = ids if ids is not None else (args[0] if args else None)
        if isinstance(ids, torch.Tensor):
            mask = torch.zeros_like(ids)
            mask[:, 0] = 1
            if hasattr(module, "qa_outputs"):
                mask = mask | _question(module, ids, kwargs).to(mask.dtype)
            kwargs = {**kwargs, "global_attention_mask": mask}
    return args, kwargs


def _question(module: nn.Module, ids: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """The question's real tokens: segment 0 with token types, else the tokens before the
    first separator; none when the inputs tell neither."""
    types = kwargs.get("token_type_ids")
    sep = getattr(module.config, "sep_token_id", None)
    if isinstance(types, torch.Tensor):
        question = _first_segment(types)
    elif isinstance(sep, int):
        question = _before_first_separator(ids, sep)
    else:
        question = torch.zeros_like(ids, dtype=torch.bool)
    attention = kwargs.get("attention_mask")
    return question & attention.bool() if isinstance(attention, torch.Tensor) else question


def _first_segment(types: torch.Tensor) -> torch.Tensor:
    """The first segment ([CLS] question [SEP]) of rows that hold a second one: Longformer
    answers questions with global attention on the question (Beltagy et al.), and its own QA
    head finds it by counting three separators, which BERT's pairs do not have."""
    return (types == 0) & (types == 1).any(dim=1, keepdim=True)


def _before_first_separator(ids: torch.Tensor, sep: int) -> torch.Tensor:
    """Inputs without token types (RoBERTa / Longformer tokenizers: ``<s> q </s></s> c </s>``):
    the tokens before each row's first separator, in rows with at least two (a pair), which is
    the rule of Longformer's own QA head (without its demand of exactly three separators)."""
    is_sep = ids == sep
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    first = torch.where(is_sep, positions, ids.shape[1]).min(dim=1, keepdim=True).values
    return (positions < first) & (is_sep.sum(dim=1, keepdim=True) >= 2)


class LongformerFamily(ModelFamily):
    """Longformer's window rule, per-layer windows, and default global tokens."""

    def prepare(self, model: nn.Module) -> None:
        """The first token ([CLS] / <s>) gets global attention whenever the caller gives no
        global mask (with an extractive-QA head the question's tokens too: segment 0 when the
        inputs carry token types, else the tokens before the first separator), as
        Longformer's classification head does: a converted BERT/RoBERTa leans on it as an
        attention sink, and without any global token its states drift far from the source's
        (mean cosine 0.84 to the full-attention model on a 512-token LitBank window with a
        128-token window, against 0.92-0.93 for BigBird and local + global), and 60 steps of
        LitBank fine-tuning learnt nothing (docs/review/)."""
        if not getattr(model, "_kdformer_global_first", False):
            model.register_forward_pre_hook(_default_global, with_kwargs=True)
            model._kdformer_global_first = True

    def converted_weight_source(self, key: str) -> str | None:
        """The global query/key/value projections start from the local ones."""
        for name in ("query", "key", "value"):
            key = key.replace(f"attention.self.{name}_global.", f"attention.self.{name}.")
        return key

    def attention_windows(self, config: Any) -> tuple[int, ...]:
        return tuple(w // 2 for w in _windows(config))

    def check_inputs(self, config: Any, max_length: int, role: str) -> None:
        windows = _windows(config)
        bad = [w for w in windows if not isinstance(w, int) or w <= 0 or w % 2]
        if bad or len(windows) != int(config.num_hidden_layers):
            raise ConfigError(
                f"the {role}'s Longformer attention_window {config.attention_window} breaks the "
                "rule: one positive even number of tokens (w/2 each side), or a list of them "
                f"with one entry per layer ({config.num_hidden_layers} layers)"
            )


LONGFORMER = register_family(
    bert_layout(
        "Longformer",
        ("longformer",),
        family=LongformerFamily,
        positions_after_padding=True,
        input_rule="global: first token; with a QA head the question too (2)",
        taps={
            "query": Tap("attention.self.query", seq_first=True),
            "key": Tap("attention.self.key", seq_first=True),
            "value": Tap("attention.self.value", seq_first=True),
            "intermediate": Tap("intermediate"),
        },
        sliced={
            **BERT_SLICED,
            "attention.self.query_global": _HEADS,
            "attention.self.key_global": _HEADS,
            "attention.self.value_global": _HEADS,
        },
        attention="banded",
        attention_note="compared within each query's local window",
        per_layer_keys=("attention_window",),
    )
)
