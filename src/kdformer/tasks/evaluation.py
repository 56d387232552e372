"""Scoring a model on a task's evaluation examples: the one loop that training, the teacher
check, the report and the studies all evaluate with."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from kdformer.features import model_inputs
from kdformer.tasks.base import Task


@torch.inference_mode()
def evaluate_model(
    model: torch.nn.Module,
    task: Task,
    examples: Any,
    tokenizer: Any,
    batch_size: int,
    device: torch.device | str,
    description: str = "evaluate",
    features: Any = None,
    pad_to: int | None = None,
) -> dict[str, float]:
    """Task metrics of ``model`` on raw evaluation ``examples`` (tokenised with ``tokenizer``
    unless their ``features`` are given): batches through the model, outputs into the task's
    scorer, which maps them back to examples (windows to words, spans to answers) and scores.
    ``pad_to``: the run's one batch length, when its model family needs one."""
    if features is None:
        features = task.tokenize(examples, tokenizer, "eval")
    scorer = task.scorer(features, examples)
    device = torch.device(device)
    model.eval().to(device)
    loader = DataLoader(
        task.model_features(features),
        batch_size=batch_size,
        collate_fn=task.collator(tokenizer, "eval", pad_to),
    )
    names = task.scored_outputs
    for batch in tqdm(loader, desc=description, leave=False):
        inputs = {k: v.to(device) for k, v in model_inputs(model, batch).items()}
        out = model(**inputs)
        scorer.add({name: out[name] for name in names}, batch)
    return scorer.metrics()
