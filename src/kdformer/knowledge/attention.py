"""Attention-map knowledge: each matched student layer's attention learns the teacher's: KL
between attention distributions per query row and head (MiniLM), or MSE between pre-softmax
scores (TinyBERT).

Both are rebuilt from the query and key projections captured by forward hooks, never taken
from ``output_attentions``: the maps a model returns come after attention dropout, so a student
in train mode would be compared through a random mask (a student equal to its teacher scored a
KL of about 2.3), and they need the slow eager attention kernel."""

from __future__ import annotations

from typing import Literal

import torch

from kdformer.config.knowledge.attention import AttentionConfig
from kdformer.features import FeatureNeeds, Features
from kdformer.knowledge.base import KnowledgeTerm, ModelShape, token_mask
from kdformer.knowledge.layers import (
    TeacherLayerMixer,
    average_heads_log,
    check_head_grouping,
    chunked_sum,
    config_groups,
    distribution_kl_sum,
    key_mask,
    layer_module,
    layer_module_needs,
    masked_log_softmax,
    query_chunk,
    regroup_heads,
    scaled_dot,
)

EPS = 1e-12

__all__ = [
    "AttentionConfig",
    "AttentionKnowledge",
    "attention_kl",
    "attention_score_mse",
    "regroup_heads",
]


def attention_kl(
    student_probs: torch.Tensor, teacher_probs: torch.Tensor, query_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student) per (head, query) row of (batch, heads, q, k) attention
    probabilities, averaged over heads and real query positions. Zero-probability (masked) keys
    contribute nothing. Computed in float32."""
    teacher_probs, student_probs = teacher_probs.float(), student_probs.float()
    log_t = teacher_probs.clamp_min(EPS).log()
    log_s = student_probs.clamp_min(EPS).log()
    rows = (teacher_probs * (log_t - log_s)).sum(-1)  # (batch, heads, q)
    weights = query_mask.unsqueeze(1)
    return (rows * weights).sum() / (weights.sum().clamp_min(1) * rows.shape[1])


def attention_score_mse(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """TinyBERT's attention loss: MSE between pre-softmax attention scores (batch, heads, q, k).

    As in TinyBERT, scores at padded key positions are replaced by 0 in both (rather than the
    -inf a softmax would use), so they contribute nothing; each (head, query) row's squared error
    is averaged over the example's real keys, and rows are averaged over heads and real queries.
    """
    total = score_mse_sum(student_scores, teacher_scores, key_mask(mask, 0, mask.shape[-1]), mask)
    return total / (mask.sum().clamp_min(1) * student_scores.shape[1])


def score_mse_sum(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    keys: torch.Tensor,
    query_mask: torch.Tensor,
) -> torch.Tensor:
    """The sum behind :func:`attention_score_mse` over the query rows given (a chunk): ``keys``
    is the (batch, 1, rows, k) mask of compared keys, ``query_mask`` the rows' (batch, rows)."""
    s = torch.where(keys, student_scores.float(), 0.0)
    t = torch.where(keys, teacher_scores.float(), 0.0)
    rows = (s - t).pow(2).sum(-1) / keys.sum(-1).clamp_min(1)  # (batch, heads, rows)
    return (rows * query_mask[:, None, :]).sum()


class AttentionKnowledge(KnowledgeTerm):
    """Attention: each matched student layer's attention learns the teacher layer's, per head.

    Rebuilt from each matched layer's query/key projection outputs (forward hooks; the fused
    attention kernel stays on and attention dropout never enters): pre-softmax scores
    Q_h K_h^T / sqrt(d_head). kl: softmax over real keys, KL(teacher || student) per head and
    real query row (MiniLM). mse: MSE between the scores with padded keys set to 0, over real
    query rows (TinyBERT). Widths do not matter (maps are seq x seq). Head counts: equal, or the
    teacher has k times the student's and each group of k adjacent teacher heads is averaged;
    heads: average compares head-averaged maps for any counts; anything else is a ConfigError
    when the term is built. many_to_one mixes the teacher layers' maps with learned weights (a
    mix of distributions is a distribution). Layer 0 (embeddings) has no attention and is
    skipped in explicit pairs. The maps equal the model's own attention for models whose
    attention is softmax(QK^T/sqrt(d)) plus the padding mask (families declaring ``full``
    attention: BERT, RoBERTa, ELECTRA, DistilBERT, BigBird with full attention). For banded
    families (Longformer) each query's distribution is over the keys within the window both
    compared layers see (the narrower one), which is Longformer's local attention. Maps are
    built in query chunks (``query_chunk``; memory bounded at any length, same loss)."""

    config: AttentionConfig
    across_tokenizers = "refused"
    refused_across_tokenizers = (
        "attention maps are each model's distribution over its own tokens (token x token), "
        "and with two vocabularies the tokens differ: a teacher query's attention over its "
        "pieces is no distribution the student computes. qkv_relations and value_relation "
        "knowledge align on words (relations between the words' pooled vectors); use them"
    )

    def __init__(
        self, config: AttentionConfig, teacher: ModelShape, student: ModelShape, outputs=()
    ):
        super().__init__(config, teacher, student, outputs)
        self.groups = [
            g
            for g in config_groups(config, teacher, student)
            if g.student > 0 and all(t > 0 for t in g.teachers)
        ]
        self.pairs = [(g.student, g.centre) for g in self.groups]
        self.mixer = TeacherLayerMixer(self.groups)
        if config.heads == "match":
            check_head_grouping(teacher.num_heads, student.num_heads, "attention")

    @property
    def needs(self) -> FeatureNeeds:
        return self.needs_for("student") | self.needs_for("teacher")

    def needs_for(self, side: Literal["student", "teacher"]) -> FeatureNeeds:
        return layer_module_needs(self.groups, side, ["query", "key"])

    def band(self, group_index: int) -> int | None:
        """Keys each side of a query that both layers' attention sees (banded families), or
        None for full attention on both sides."""
        group = self.groups[group_index]
        windows = []
        if self.student_shape.attention_windows:
            windows.append(self.student_shape.attention_windows[group.student - 1])
        if self.teacher_shape.attention_windows:
            windows += [self.teacher_shape.attention_windows[t - 1] for t in group.teachers]
        return min(windows) if windows else None

    def forward(self, student: Features, teacher: Features, batch) -> torch.Tensor:
        sh, th = self.student_shape.num_heads, self.teacher_shape.num_heads
        average = self.config.heads == "average"
        heads = 1 if average else sh
        kl = self.config.loss == "kl"
        losses = []
        for i, group in enumerate(self.groups):
            s_query = layer_module(student, ("query", group.student), "student")
            s_key = layer_module(student, ("key", group.student), "student")
            t_qk = [
                (
                    layer_module(teacher, ("query", t), "teacher"),
                    layer_module(teacher, ("key", t), "teacher"),
                )
                for t in group.teachers
            ]
            mask = token_mask(batch, s_query)
            band = self.band(i)

            def rows_sum(start: int, stop: int, i=i, s_query=s_query, s_key=s_key, t_qk=t_qk,
                         mask=mask, band=band) -> torch.Tensor:  # fmt: skip
                keys = key_mask(mask, start, stop, band)
                s_scores = scaled_dot(s_query[:, start:stop], s_key, sh)
                t_scores = [scaled_dot(q[:, start:stop], k, th) for q, k in t_qk]
                rows = mask[:, start:stop]
                if kl:
                    s_log = masked_log_softmax(s_scores, keys)
                    if average:
                        s_log = average_heads_log(s_log)
                    targets = [
                        regroup_heads(masked_log_softmax(t, keys).exp(), heads) for t in t_scores
                    ]
                    return distribution_kl_sum(s_log, self.mixer.mix(i, targets), rows)
                if average:
                    s_scores = s_scores.mean(1, keepdim=True)
                targets = [regroup_heads(t, heads) for t in t_scores]
                return score_mse_sum(s_scores, self.mixer.mix(i, targets), keys, rows)

            length = s_query.shape[1]
            chunk = query_chunk(
                mask.shape[0], max(sh, th) * len(t_qk), length, length, self.config.query_chunk
            )
            total = chunked_sum(rows_sum, length, chunk)
            losses.append(total / (mask.sum().clamp_min(1) * heads))
        return torch.stack(losses).mean()
