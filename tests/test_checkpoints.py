"""Which checkpoint a resume starts from, and refusing one written for another model shape."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
from conftest import tiny_bert

from kdformer.config import ConfigError
from kdformer.training import check_checkpoint_fits, checkpoint_problem, latest_checkpoint


def write_checkpoint(folder, model=None, weights=True, state=True):
    folder.mkdir(parents=True)
    if state:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    if weights:
        tensors = {k: v.contiguous() for k, v in (model or tiny_bert()).state_dict().items()}
        safetensors.torch.save_file(tensors, folder / "model.safetensors")
    return folder


def test_the_newest_complete_checkpoint_is_the_one_resumed(tmp_path):
    good = write_checkpoint(tmp_path / "checkpoint-4")
    no_weights = write_checkpoint(tmp_path / "checkpoint-8", weights=False)
    no_state = write_checkpoint(tmp_path / "checkpoint-12", state=False)
    truncated = write_checkpoint(tmp_path / "checkpoint-10")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 3])
    assert checkpoint_problem(good) is None
    assert checkpoint_problem(no_weights) == "its weights are missing"
    assert checkpoint_problem(no_state) == "it has no trainer_state.json"
    assert checkpoint_problem(truncated).startswith("its weights are unreadable")
    assert latest_checkpoint(tmp_path) == good
    assert latest_checkpoint(tmp_path / "none") is None


def test_a_checkpoint_of_another_shape_is_refused_before_resuming(tmp_path):
    folder = write_checkpoint(tmp_path / "checkpoint-2", tiny_bert(layers=2, hidden=16, heads=2))
    check_checkpoint_fits(tiny_bert(layers=2, hidden=16, heads=2), folder)  # same shape: fine
    with pytest.raises(ConfigError, match=r"belongs to another config: .* is \[.*16.*\] there"):
        check_checkpoint_fits(tiny_bert(layers=2, hidden=32, heads=2), folder)
    with pytest.raises(ConfigError, match=r"it lacks bert.encoder.layer.2"):
        check_checkpoint_fits(tiny_bert(layers=3, hidden=16, heads=2), folder)
