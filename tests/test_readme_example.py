"""The README's Python example runs as written: its code blocks are read from README.md and
executed, on a tiny teacher for a few steps (the only changes: the settings the example defines
at its top, and fewer sentences), and the plain loop trains both the student and the objective's
projections."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from conftest import GLUE, needs_data, save_tiny_glue_teacher

ROOT = Path(__file__).resolve().parents[1]
STEPS = 24
SMALL = ["task.max_train_samples=256", "task.max_eval_samples=64"]


def python_blocks() -> list[str]:
    """The ```python blocks of the README's "## Python" section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def with_setting(code: str, name: str, value: object) -> str:
    """``code`` with the one top-level line ``name = ...`` set to ``value``."""
    pattern = rf"^{name} = .*$"
    assert len(re.findall(pattern, code, flags=re.M)) == 1, f"the example defines {name} once"
    return re.sub(pattern, f"{name} = {value!r}", code, flags=re.M)


def test_readme_has_a_loop_and_a_distiller():
    blocks = python_blocks()
    assert len(blocks) == 2
    loop, distiller = blocks
    # The optimiser takes the objective's parameters (projections) with the student's.
    assert "objective.parameters()" in loop and "optimizer.step()" in loop
    assert "Distiller(" in distiller and "distiller.train()" in distiller


@pytest.mark.slow
@needs_data(GLUE / "SST-2")
def test_readme_example_trains(tmp_path, monkeypatch):
    loop, distiller_code = python_blocks()
    teacher = save_tiny_glue_teacher(tmp_path / "teacher")
    loop = with_setting(loop, "teacher_dir", str(teacher))
    loop = with_setting(loop, "output_dir", str(tmp_path / "mine"))
    loop = with_setting(loop, "steps", STEPS)
    loop, count = re.subn(  # 256 training and 64 dev sentences of the demo's data (SST-2)
        r'^config = load_config\("configs/demo.yaml"\)',
        'config = load_config("configs/demo.yaml", SMALL)',
        loop,
        flags=re.M,
    )
    assert count == 1, "the example loads configs/demo.yaml once, as `config`"
    namespace: dict = {"__name__": "readme_example", "SMALL": SMALL}
    monkeypatch.chdir(ROOT)  # the demo config's data_dir is relative to the working directory
    # Run up to the training loop, note the projections, then run the rest.
    setup, training = loop.split("\nlosses = []\n", 1)
    exec(compile(setup, "README.md (python loop)", "exec"), namespace)
    objective, student = namespace["objective"], namespace["student"]
    assert student.config.hidden_size < namespace["teacher"].config.hidden_size
    projections = {n: p.detach().clone() for n, p in objective.named_parameters()}
    assert projections, "a narrower student's hidden term has projections"
    in_optimizer = {id(p) for g in namespace["optimizer"].param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in objective.parameters())
    assert all(id(p) in in_optimizer for p in student.parameters())

    exec(compile("losses = []\n" + training, "README.md (python loop)", "exec"), namespace)
    losses = namespace["losses"]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])  # the loss goes down
    changed = [
        n for n, p in objective.named_parameters() if not torch.equal(p.detach(), projections[n])
    ]
    assert sorted(changed) == sorted(projections)  # every projection was trained
    saved = tmp_path / "mine" / "student"
    assert (saved / "model.safetensors").is_file() and (saved / "tokenizer.json").is_file()

    exec(compile(distiller_code, "README.md (Distiller)", "exec"), namespace)
    assert namespace["distiller"].trainer.state.global_step == STEPS
