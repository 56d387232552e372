"""Saved weights are readable as any new file is: mode 0o666 less the umask, not the 0600 that
safetensors' temporary file leaves (a saved student, a pipeline save, a checkpoint, a teacher
cache shard)."""

from __future__ import annotations

import os
import stat

import pytest
import safetensors.torch
import torch
import transformers
from conftest import tiny_bert
from datasets import Dataset
from transformers import default_data_collator

from kdformer import Distiller
from kdformer.cache.items import Item
from kdformer.cache.shards import ItemWriter
from kdformer.config import TrainConfig
from kdformer.config.knowledge import HiddenConfig, LogitsConfig
from kdformer.features import OutputSpec
from kdformer.models import default_file_mode, resolve_name, share_files
from kdformer.objective import DistillationObjective
from kdformer.pipeline.outputs import save_atomically


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    """Runs the test under this umask; gives the mode a new file then gets."""
    previous = os.umask(request.param)
    try:
        yield 0o666 & ~request.param
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def weights(folder) -> list:
    files = sorted(folder.rglob("*.safetensors"))
    assert files, f"no weights under {folder}"
    return files


def test_default_file_mode_follows_the_umask(tmp_path, umask):
    assert default_file_mode(tmp_path) == umask
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_share_files_gives_safetensors_files_the_umask_mode(tmp_path, umask):
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({"a": torch.zeros(2)}, str(path))
    os.chmod(path, 0o600)  # what safetensors' temporary file leaves
    (tmp_path / "sub").mkdir()
    other = tmp_path / "sub" / "x.safetensors"
    safetensors.torch.save_file({"a": torch.zeros(2)}, str(other))
    os.chmod(other, 0o600)
    share_files(path)
    assert mode(path) == umask and mode(other) == 0o600  # a file: only that one
    share_files(tmp_path)
    assert mode(other) == umask  # a folder: every file under it


def test_a_pipeline_save_has_the_umask_mode(tmp_path, umask):
    model = tiny_bert()
    save_atomically(lambda folder: model.save_pretrained(folder), tmp_path / "student")
    for path in weights(tmp_path / "student"):
        assert mode(path) == umask, path
    assert mode(tmp_path / "student" / "config.json") == umask


def test_a_distilled_student_and_its_checkpoint_have_the_umask_mode(tmp_path, umask):
    teacher = tiny_bert(seed=0)
    student = tiny_bert(seed=1, layers=2, hidden=16, heads=2, intermediate=32).train()
    objective = DistillationObjective(
        [LogitsConfig(temperature=2.0), HiddenConfig()], teacher.config, student.config,
        [OutputSpec("logits", label_key="labels")], hard_label_weight=0.5,
    )  # fmt: skip
    ids = torch.randint(1, 100, (8, 8), generator=torch.Generator().manual_seed(1))
    features = Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * 8, "labels": [0, 1] * 4}
    )
    train = TrainConfig(
        max_steps=2, batch_size=4, learning_rate=1e-3, save_steps=2, logging_steps=1, report_to=[]
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_name("minilm-l6"))
    distiller = Distiller(
        student, teacher, objective, None, tokenizer, train, tmp_path / "checkpoints",
        train_features=features, collator=default_data_collator,
    )  # fmt: skip
    distiller.train()
    for path in weights(tmp_path / "checkpoints"):
        assert mode(path) == umask, path
    folder = distiller.save(tmp_path / "student")
    for path in weights(folder):
        assert mode(path) == umask, path


def test_a_teacher_cache_shard_has_the_umask_mode(tmp_path, umask):
    writer = ItemWriter(tmp_path / "item.partial", Item("out.logits", "example"), torch.float16)
    for row in range(3):
        writer.add(row, torch.randn(2))
    writer.finish("float16")
    for path in weights(tmp_path / "item.partial"):
        assert mode(path) == umask, path
