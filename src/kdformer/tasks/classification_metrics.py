"""Classification and regression metrics on the torchmetrics functional API: accuracy, F1,
MCC, Pearson and Spearman, each defined (as GLUE's scorer does) for degenerate inputs too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchmetrics import functional as tmf

MetricFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _constant(values: torch.Tensor) -> bool:
    return values.numel() == 0 or bool((values == values.reshape(-1)[0]).all())


def matthews_corrcoef(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """MCC, 0 for a degenerate confusion matrix (constant predictions or constant gold labels),
    as GLUE's scorer and scikit-learn define it. torchmetrics 1.9 approximates that case with
    an epsilon and reports e.g. 2.56 for a constant predictor."""
    if _constant(preds) or _constant(target):
        return torch.tensor(0.0)
    return tmf.matthews_corrcoef(preds, target, task="multiclass", num_classes=num_classes)


def _correlation(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> MetricFn:
    """A correlation that is 0 (no linear relation) when either side is constant."""

    def compute(preds: torch.Tensor, target: torch.Tensor, _: int) -> torch.Tensor:
        if _constant(preds) or _constant(target):
            return torch.tensor(0.0)
        return fn(preds, target)

    return compute


METRICS: dict[str, MetricFn] = {
    "accuracy": lambda p, t, n: tmf.accuracy(p, t, task="multiclass", num_classes=n),
    "mcc": matthews_corrcoef,
    "f1": lambda p, t, n: tmf.f1_score(p, t, task="binary"),  # positive class = 1
    "f1_macro": lambda p, t, n: tmf.f1_score(
        p, t, task="multiclass", num_classes=n, average="macro"
    ),
    "pearson": _correlation(tmf.pearson_corrcoef),
    "spearman": _correlation(tmf.spearman_corrcoef),
}


def classification_scores(
    logits: np.ndarray,
    labels: np.ndarray,
    metric_names: Sequence[str],
    num_labels: int,
    is_regression: bool,
) -> dict[str, float]:
    """Scores of per-example logits (task label order) against gold label ids: the argmax for
    classification, the single output for regression."""
    logits = np.asarray(logits)
    if is_regression:
        preds = torch.as_tensor(logits.reshape(-1), dtype=torch.float64)
        target = torch.as_tensor(np.asarray(labels).reshape(-1), dtype=torch.float64)
    else:
        preds = torch.as_tensor(logits.argmax(axis=-1), dtype=torch.long)
        target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return {name: float(METRICS[name](preds, target, num_labels)) for name in metric_names}
