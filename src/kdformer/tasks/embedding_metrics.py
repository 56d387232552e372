"""Scores of sentence-pair similarities: correlation with graded scores (STS) and the best
threshold's accuracy and F1 on labelled pairs (paraphrase); and the bag-of-words cosine, the
non-neural similarity every embedding model must beat.

Metrics are fractions, as every kdformer metric (a Spearman of 81.0 in the literature's x100
convention is 0.810 here)."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
from scipy import stats

_WORD = re.compile(r"\w+")


def correlations(similarities: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Spearman's and Pearson's correlations of predicted similarities with gold scores
    (``scipy.stats``, ties ranked by their mean as sentence-transformers' evaluator does); 0
    when either side is constant or there are fewer than two pairs (no relation to measure)."""
    x, y = np.asarray(similarities, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": 0.0, "pearson": 0.0}
    return {
        "spearman": float(stats.spearmanr(x, y).statistic),
        "pearson": float(stats.pearsonr(x, y).statistic),
    }


def _cuts(similarities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each way of calling the k most similar pairs positive (k = 0..n; tied similarities
    always on one side): k, the true positives among them, whether the cut is possible, and
    its threshold (a pair is positive when its similarity is >= the threshold)."""
    order = np.argsort(-similarities, kind="stable")
    s, y = similarities[order], labels[order]
    n = len(s)
    k = np.arange(n + 1)
    true_positives = np.concatenate([[0], np.cumsum(y)])
    possible = np.ones(n + 1, dtype=bool)
    possible[1:n] = s[:-1] > s[1:]
    thresholds = np.empty(n + 1)
    thresholds[0] = np.nextafter(s[0], np.inf) if n else 0.0
    thresholds[1:n] = (s[:-1] + s[1:]) / 2
    if n:
        thresholds[n] = s[-1]
    return k, true_positives, possible, thresholds


def best_accuracy(similarities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the similarity threshold that classifies the labelled pairs
    best, the threshold chosen on these pairs themselves (sentence-transformers'
    BinaryClassificationEvaluator; here tied similarities stay on one side and calling every
    pair positive, or none, counts too, so a threshold never loses to the majority class)."""
    sims, gold = np.asarray(similarities, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if not len(sims):
        return 0.0, 0.0
    k, tp, possible, thresholds = _cuts(sims, gold)
    negatives = len(gold) - gold.sum()
    accuracy = (tp + negatives - (k - tp)) / len(gold)
    accuracy = np.where(possible, accuracy, -1.0)
    best = int(accuracy.argmax())
    return float(accuracy[best]), float(thresholds[best])


def best_f1(similarities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(F1 of the positive class, threshold) at the threshold that maximises F1 on these pairs
    (as :func:`best_accuracy` chooses its threshold); 0 when no pair is positive."""
    sims, gold = np.asarray(similarities, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    positives = int(gold.sum())
    if not len(sims) or positives == 0:
        return 0.0, float(np.nextafter(sims.max(), np.inf)) if len(sims) else 0.0
    k, tp, possible, thresholds = _cuts(sims, gold)
    f1 = np.where(possible & (k > 0), 2 * tp / np.maximum(k + positives, 1), -1.0)
    best = int(f1.argmax())
    return float(f1[best]), float(thresholds[best])


def paraphrase_scores(similarities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Best-threshold accuracy and F1 with their thresholds (:func:`best_accuracy`,
    :func:`best_f1`)."""
    accuracy, accuracy_threshold = best_accuracy(similarities, labels)
    f1, f1_threshold = best_f1(similarities, labels)
    return {
        "accuracy": accuracy,
        "f1": f1,
        "accuracy_threshold": accuracy_threshold,
        "f1_threshold": f1_threshold,
    }


def bag_of_words_cosine(first: str, second: str) -> float:
    """Cosine similarity of the two texts' word counts (lower-cased ``\\w+`` words): how many
    words the sentences share, what an embedding must do better than to be worth its model;
    0 when either has no word."""
    a, b = Counter(_WORD.findall(first.lower())), Counter(_WORD.findall(second.lower()))
    dot = sum(count * b[word] for word, count in a.items())
    norm = math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values()))
    return dot / norm if norm else 0.0
