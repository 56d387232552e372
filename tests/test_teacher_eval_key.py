"""The stored teacher evaluation (``teacher_eval.json``, which feeds the weak-teacher stop and
the report's teacher row) is keyed on the teacher's content: a teacher retrained to the same
file sizes and saved within the same second is evaluated again, a re-saved identical one not."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import transformers
from conftest import tiny_bert

from kdformer.cache import weights_fingerprint
from kdformer.config import ConfigError, load_config
from kdformer.pipeline.teachers import (
    check_teacher,
    evaluate_teacher,
    teacher_fingerprint,
    teacher_reference,
)

STAMP = 1_700_000_000.25  # one time, to the fraction, for every file of both teachers


def _save(model, folder: Path) -> None:
    model.save_pretrained(folder)
    for path in folder.iterdir():
        os.utime(path, (STAMP, STAMP))


def _old_key_fields(folder: Path) -> list[tuple[str, int, int]]:
    """What the evaluation used to be keyed on: names, sizes and whole-second times."""
    return sorted(
        (p.name, p.stat().st_size, int(p.stat().st_mtime))
        for p in folder.iterdir()
        if p.suffix in (".safetensors", ".json")
    )


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A run config whose teacher is ``tmp_path/teacher``, a task with a 0.5 baseline, and an
    evaluation that scores each teacher by its weights (strong: 0.95, weak: 0.52), counted."""
    folder = tmp_path / "teacher"
    strong, weak = tiny_bert(seed=0), tiny_bert(seed=1)
    scores = {weights_fingerprint(strong): 0.95, weights_fingerprint(weak): 0.52}
    calls: list[float] = []

    def evaluate_model(teacher, *args, **kwargs):
        calls.append(scores[weights_fingerprint(teacher)])
        return {"accuracy": calls[-1]}

    monkeypatch.setattr("kdformer.pipeline.teachers.evaluate_model", evaluate_model)
    task = SimpleNamespace(
        load=lambda split: [],
        baseline=lambda train, evaluation: {"accuracy": 0.5},
        main_metric="accuracy",
        baseline_name="majority class",
        higher_is_better=True,
    )
    config = load_config(
        None, [f"output_dir={tmp_path / 'run'}", f"teacher.name={folder}", "report.device=cpu"]
    )
    return SimpleNamespace(
        folder=folder, strong=strong, weak=weak, calls=calls, task=task, config=config
    )


def _measure(setup) -> dict:
    """The teacher check as a run does it: the teacher loaded from its folder, evaluated (or
    its stored evaluation read back)."""
    teacher = transformers.BertForSequenceClassification.from_pretrained(setup.folder).eval()
    return evaluate_teacher(setup.config, setup.task, teacher, tokenizer=None)


def test_a_retrained_teacher_of_the_same_size_and_second_is_evaluated_again(setup):
    _save(setup.strong, setup.folder)
    first = _measure(setup)
    assert setup.calls == [0.95] and first["metrics"] == {"accuracy": 0.95}
    check_teacher(setup.config, setup.task, first)  # strong enough: no stop
    assert _measure(setup) == first and setup.calls == [0.95]  # stored: not evaluated again
    before = _old_key_fields(setup.folder)

    # Retrained (here: other weights) to the same sizes, saved with the same times.
    _save(setup.weak, setup.folder)
    assert _old_key_fields(setup.folder) == before  # what the old key could not tell apart
    second = _measure(setup)
    assert setup.calls == [0.95, 0.52] and second["metrics"] == {"accuracy": 0.52}
    assert second["fingerprint"] != first["fingerprint"]
    stored = json.loads((setup.config.output_dir / "teacher_eval.json").read_text())
    assert stored["metrics"] == {"accuracy": 0.52}
    with pytest.raises(ConfigError, match="learnt too little"):
        check_teacher(setup.config, setup.task, second)  # the weak teacher is stopped
    # The evaluate stage takes the stored metrics only for the teacher that is there now.
    key = teacher_fingerprint(teacher_reference(setup.config), setup.config.task)
    assert key == stored["fingerprint"] != first["fingerprint"]


def test_a_resaved_identical_teacher_keeps_its_evaluation(setup):
    _save(setup.strong, setup.folder)
    first = _measure(setup)
    transformers.BertForSequenceClassification.from_pretrained(setup.folder).save_pretrained(
        setup.folder
    )  # the same weights written again, with new file times
    for path in setup.folder.iterdir():
        os.utime(path, (STAMP + 3600, STAMP + 3600))
    assert _measure(setup) == first and setup.calls == [0.95]
    # Another task section is another evaluation.
    other = setup.config.model_copy(
        update={"task": setup.config.task.model_copy(update={"max_length": 17})}
    )
    assert teacher_fingerprint(teacher_reference(other), other.task) != first["fingerprint"]
