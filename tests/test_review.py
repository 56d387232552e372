"""End to end: a review of every architecture on tiny models at two lengths writes its table,
JSON and plots; bad review files are refused before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import GLUE, HOTPOTQA, SQUAD, needs_data
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config import ConfigError
from kdformer.config.review import load_review

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

ARCHITECTURES = [
    {"name": "full", "convert": {"to": "full"}},
    {"name": "longformer", "convert": {"to": "longformer", "window": 16}},
    {"name": "bigbird", "convert": {"to": "bigbird", "block_size": 4, "num_random_blocks": 1}},
    {"name": "nystromformer", "convert": {"to": "nystromformer", "num_landmarks": 16}},
    {"name": "local_global", "convert": {"to": "local_global", "block_size": 16}},
]


def review_file(tmp_path, teacher, architectures=ARCHITECTURES, **extra):
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "teacher": {"name": str(teacher)},
                "task": {
                    "name": "sst2",
                    "data_dir": str(GLUE),
                    "max_train_samples": 32,
                    "max_eval_samples": 32,
                    "max_length": 48,
                },
                "finetune": {
                    "max_steps": 2,
                    "batch_size": 16,
                    "learning_rate": 1e-3,
                    "save_steps": 2,
                    "report_to": [],
                },
                "student": {"preset": "half", "init": "teacher"},
                "distill": {
                    "train": {"max_steps": 2, "batch_size": 16, "save_steps": 2, "report_to": []},
                    "knowledge": [{"type": "logits"}, {"type": "hidden"}],
                    "allow_weak_teacher": True,
                },
                "report": {
                    "latency_repeats": 1,
                    "latency_batch_size": 2,
                    "latency_seq_length": 16,
                    "memory": False,
                },
            }
        )  # fmt: skip
    )
    review = {
        "output_dir": str(tmp_path / "review"),
        "base": "base.yaml",
        "architectures": architectures,
        "tasks": [{"name": "sst2"}],
        "lengths": [32, 64],
        "latency_repeats": 2,
        **extra,
    }
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump(review))
    return path


@pytest.mark.slow
@needs_data(GLUE)
def test_review_of_every_architecture_writes_table_json_and_plots(tiny_teacher, tmp_path):
    path = review_file(tmp_path, tiny_teacher)
    result = runner.invoke(app, ["review", str(path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "review"
    data = json.loads((out / "review.json").read_text())
    assert [c["architecture"] for c in data["cells"]] == [a["name"] for a in ARCHITECTURES]
    for cell in data["cells"]:
        assert set(cell["teacher_latency_ms"]) == set(cell["student_latency_ms"]) == {"32", "64"}
        assert all(v > 0 for v in cell["student_latency_ms"].values())
        assert cell["student_parameters"] < cell["teacher_parameters"]
        assert cell["teacher_peak_mib"]["64"] is not None
    bigbird = next(c for c in data["cells"] if c["architecture"] == "bigbird")
    # (5 + 2 x 1) x 4 = 28 tokens: both lengths run block-sparse, so no fallback is noted
    assert not bigbird["notes"]
    table = (out / "review.md").read_text()
    assert "| longformer |" in table and "@ 64: ms T / S, time saved, speed-up" in table
    assert all(c["teacher_training"]["steps"] == 2 for c in data["cells"])
    assert (out / "latency.png").stat().st_size > 0
    assert (out / "retention_speedup.png").stat().st_size > 0
    # each run is a real convert-then-distill run
    run = out / "runs" / "sst2" / "nystromformer"
    assert (
        json.loads((run / "student" / "config.json").read_text())["model_type"] == "nystromformer"
    )


def test_bad_review_files_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "x", "base": "b.yaml", "tasks": [{"name": "t"}],
                                    "architectures": [{"name": "a", "convert": {"to": "reformer"}}]}))  # fmt: skip
    with pytest.raises(ConfigError, match="architectures.0.convert.to: Input should be .full."):
        load_review(path)
    path.write_text(yaml.safe_dump({"output_dir": "x", "base": "b.yaml", "tasks": [{"name": "t"}],
                                    "architectures": [{"name": "a", "convert": {"to": "full"}}],
                                    "reference": "full"}))  # fmt: skip
    with pytest.raises(ConfigError, match="reference 'full' is not an architecture"):
        load_review(path)


def test_review_table_compares_teachers_and_gives_time_saved_at_every_length(tmp_path):
    """Hand-computed: the longformer teacher scores 0.45 against the full teacher's 0.50
    (90.0%); its student's 400 ms against its teacher's 1000 ms at 64 tokens saves 60.0%
    (2.50x) and against the full teacher's 1600 ms 75.0% (4.00x)."""
    from kdformer.config.review import ReviewConfig
    from kdformer.review import render_markdown, time_reduction_pct

    def cell(arch, teacher, student, t_ms, s_ms, training=None):
        return {
            "task": "sst2", "architecture": arch, "main_metric": "accuracy",
            "teacher_metric": teacher, "student_metric": student,
            "retention_pct": 100 * student / teacher, "retention_meaningful": True,
            "teacher_parameters": 2e6, "student_parameters": 1e6, "seed": 7,
            "teacher_latency_ms": {"32": t_ms / 2, "64": t_ms},
            "student_latency_ms": {"32": s_ms / 2, "64": s_ms},
            "teacher_peak_mib": {}, "student_peak_mib": {}, "notes": {},
            "teacher_training": training, "student_training": None,
        }  # fmt: skip

    curve = {"steps": 300, "train_seconds": 600.0, "last_window_gain": 0.31, "plateau": True,
             "curve_points": [[150, 45.0], [300, 50.0]], "kept_step": 300}  # fmt: skip
    result = {
        "reference": "full",
        "cells": [
            cell("full", 0.50, 0.49, 1600.0, 800.0, curve),
            cell("longformer", 0.45, 0.45, 1000.0, 400.0),
        ],
    }
    review = ReviewConfig.model_validate(
        {
            "output_dir": str(tmp_path),
            "base": "base.yaml",
            "lengths": [32, 64],
            "architectures": [
                {"name": "full", "convert": {"to": "full"}},
                {"name": "longformer", "convert": {"to": "longformer", "window": 16}},
            ],
            "tasks": [{"name": "sst2"}],
        }  # fmt: skip
    )
    table = render_markdown(review, result)
    assert time_reduction_pct(1000.0, 400.0) == pytest.approx(60.0)
    assert "| full | 50.00 | 100.0% | 49.00 | 98.0% | +0.31 (plateau) | 10.0 / - |" in table
    assert "| longformer | 45.00 | 90.0% | 45.00 | 100.0% | not judged | - / - |" in table
    assert (
        "| longformer | 500 / 200, 60.0%, 2.50x | 1000 / 400, 60.0%, 2.50x | 75.0%, 4.00x |"
        in table
    )
    assert "| full | 800 / 400, 50.0%, 2.00x | 1600 / 800, 50.0%, 2.00x | 50.0%, 2.00x |" in table
    assert "Seed: 7." in table
    assert "- full teacher: 150: 45.00, 300: 50.00 (kept: step 300)." in table


@needs_data(GLUE)
def test_lengths_beyond_the_converted_positions_are_refused_before_any_training(
    tmp_path, tiny_teacher, monkeypatch
):
    """Once converted, fine-tuned, distilled and evaluated, then a tensor-size error while
    timing: now refused before any run starts."""
    monkeypatch.setattr(
        "kdformer.review.runner.pipeline.run", lambda *a, **k: pytest.fail("trained")
    )
    short = [{"name": "full", "convert": {"to": "full"}},
             {"name": "longformer", "convert": {"to": "longformer", "window": 16, "max_length": 48}}]  # fmt: skip
    path = review_file(tmp_path, tiny_teacher, short, lengths=[32, 64])
    result = runner.invoke(app, ["review", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert (
        "architectures.1 (longformer): convert.max_length 48 is below the review's longest "
        "length 64, so its models could not be timed there" in text
    )
    assert "Raise convert.max_length to at least 64 (or leave it unset" in text
    # The base task's max_length (48) against positions converted for the lengths (40).
    path = review_file(tmp_path, tiny_teacher, ARCHITECTURES[:1], lengths=[32, 40])
    result = runner.invoke(app, ["review", str(path)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"task.max_length 48 is over the position limit of '{tiny_teacher}' (40 tokens)" in text
    assert not (tmp_path / "review").exists()


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stopped_review_says_what_was_kept_and_how_to_continue(
    tiny_teacher, tmp_path, monkeypatch, stop
):
    """Ctrl-C or SIGTERM during `kdformer review` once ended with exit code 130 and no word
    (or killed without one); now it names the finished runs and the checkpoints it resumes."""
    import signal
    import sys

    import torch
    from safetensors.torch import save_file

    from kdformer import review as review_module
    from kdformer.cli import Terminated

    path = review_file(tmp_path, tiny_teacher, ARCHITECTURES[:2])
    runs = tmp_path / "review" / "runs" / "sst2"

    def stopped(config, folder, *args, **kwargs):
        (runs / "full").mkdir(parents=True)
        (runs / "full" / "report.json").write_text("{}")  # the first cell finished
        checkpoint = runs / "longformer" / "checkpoints" / "teacher" / "checkpoint-2"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
        save_file({"w": torch.zeros(1)}, str(checkpoint / "model.safetensors"))
        raise KeyboardInterrupt if stop == "ctrl-c" else Terminated(signal.SIGTERM)

    monkeypatch.setattr(review_module, "run_review", stopped)
    monkeypatch.setattr(sys, "argv", ["kdformer", "review", str(path)])
    result = runner.invoke(app, ["review", str(path)])
    assert result.exit_code == (130 if stop == "ctrl-c" else 143), result.output
    text = " ".join(result.output.split())
    assert ("interrupted." if stop == "ctrl-c" else "terminated (SIGTERM).") in text
    assert f"finished cells 1 of 2 ({runs / 'full'})" in text
    assert "checkpoint-2" in text and "The review reuses finished cells" in text
    assert text.endswith(f"Continue with: kdformer review {path} --resume")


@pytest.mark.slow
@needs_data(GLUE)
def test_a_review_in_parts_reuses_published_cells_where_the_runs_are_gone(
    tiny_teacher, tmp_path, monkeypatch
):
    """A CPU review at plateau takes longer than one session, and a fresh clone has no runs
    folder: each finished cell is published beside the tables, a later review trains only
    what is missing and times the published architectures; a changed run config retrains."""
    import shutil

    from kdformer.review import runner as review_runner

    path = review_file(tmp_path, tiny_teacher, ARCHITECTURES[:2], memory=True)
    result = runner.invoke(app, ["review", str(path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "review"
    first = json.loads((out / "review.json").read_text())
    published = sorted(p.name for p in (out / "cells").iterdir())
    assert published == ["sst2__full.json", "sst2__longformer.json"]
    cell = json.loads((out / "cells" / "sst2__longformer.json").read_text())
    assert cell["cell"]["architectures"]["student"]["model_type"] == "longformer"
    assert cell["cell"]["architectures"]["student"]["num_hidden_layers"] == 2  # half of 4

    shutil.rmtree(out / "runs")  # a fresh clone: the tables and cells, no models
    monkeypatch.setattr(review_runner.pipeline, "run", lambda *a, **k: pytest.fail("trained"))
    result = runner.invoke(app, ["review", str(path)])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "review.json").read_text())
    for before, after in zip(first["cells"], again["cells"], strict=True):
        assert after["teacher_metric"] == before["teacher_metric"]
        assert after["student_metric"] == before["student_metric"]
        assert after["teacher_training"] == before["teacher_training"]
        assert set(after["student_latency_ms"]) == {"32", "64"}
        assert after["student_peak_mib"]["64"] is not None
        assert "fresh weights" in after["notes"]["teacher"]
    assert "published architecture with fresh weights" in (out / "review.md").read_text()

    trained = []

    def run_cell(config, *args):
        trained.append(config)
        raise RuntimeError("stopped after the first cell to train")

    monkeypatch.setattr(review_runner, "run_cell", run_cell)
    data = yaml.safe_load((tmp_path / "base.yaml").read_text())
    data["distill"]["train"]["max_steps"] = 3  # another run config: the cell is stale
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["review", str(path)])
    assert isinstance(result.exception, RuntimeError)
    assert len(trained) == 1 and trained[0].distill.train.max_steps == 3


@pytest.mark.slow
@needs_data(SQUAD, HOTPOTQA)
def test_long_qa_review_trains_on_squad_and_answers_hotpotqa_in_long_windows(
    tiny_teacher, tmp_path
):
    """configs/review/long_qa.yaml in miniature: the teacher converted (its head dropped),
    adapted on SQuAD until HotpotQA F1 plateaus, distilled on SQuAD, every model scored on
    whole HotpotQA contexts in long windows and timed at each length."""
    base = yaml.safe_load((CONFIGS / "review" / "long_qa_base.yaml").read_text())
    base["teacher"] = {"name": str(tiny_teacher)}
    base["task"].update(
        train_file=str(SQUAD),
        eval_file=str(HOTPOTQA),
        max_train_samples=32,
        max_eval_samples=6,
        max_length=512,
        doc_stride=128,
    )
    base["finetune"].update(max_steps=4, batch_size=8, gradient_accumulation_steps=1, eval_steps=2)
    base["finetune"]["save_steps"] = 2
    base["distill"]["train"].update(max_steps=2, batch_size=8, gradient_accumulation_steps=1)
    base["distill"]["train"].update(eval_steps=2, save_steps=2)
    base["distill"]["allow_weak_teacher"] = True
    base["report"] = {"latency_repeats": 1, "latency_seq_length": 64, "memory": False}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    review = yaml.safe_load((CONFIGS / "review" / "long_qa.yaml").read_text())
    review.update(output_dir=str(tmp_path / "review"), runs_dir=str(tmp_path / "runs"))
    review.update(base="base.yaml", lengths=[256, 512], latency_repeats=1)
    review["architectures"] = [
        {"name": "full", "convert": {"to": "full"}},
        {"name": "local_global", "convert": {"to": "local_global", "block_size": 16}},
    ]
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump(review))
    result = runner.invoke(app, ["review", str(path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "review" / "review.json").read_text())
    assert [c["architecture"] for c in data["cells"]] == ["full", "local_global"]
    for cell in data["cells"]:
        assert cell["task"] == "hotpotqa" and cell["main_metric"] == "f1"
        assert cell["teacher_training"]["curve_metric"] == "f1"
        assert [s for s, _ in cell["teacher_training"]["curve_points"]] == [2, 4]
        assert set(cell["student_latency_ms"]) == {"256", "512"}
        assert cell["student_metric"] >= 0 and cell["teacher_metric"] >= 0
    assert "## hotpotqa (f1)" in (tmp_path / "review" / "review.md").read_text()
