"""Studies: a small study on a tiny teacher and 64-example slices of real SST-2 data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import GLUE, needs_data, save_teacher_fit_to_eval
from typer.testing import CliRunner

from kdformer import pipeline, studies
from kdformer.cli import app
from kdformer.config import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread


def write_study(folder: Path, teacher: Path, **changes) -> Path:
    """Two variants x two seeds on SST-2, the base given as a path relative to the study file."""
    study = {
        "name": "tiny",
        "output_dir": str(folder / "out"),
        "base": "../base.yaml",
        "overrides": {
            "teacher.name": str(teacher),
            "task.data_dir": str(GLUE),
            "task.max_train_samples": 64,
            "task.max_eval_samples": 32,
            "task.max_length": 32,
            "finetune": {"max_steps": 1, "batch_size": 32, "eval_steps": 1, "report_to": []},
            "distill.train": {"max_steps": 1, "batch_size": 32, "report_to": []},
            "distill.allow_weak_teacher": True,  # a 1-step teacher learns nothing
            "student.num_layers": 2,
            "report": {
                "latency_repeats": 2,
                "latency_batch_size": 4,
                "latency_seq_length": 16,
                "memory": False,
            },
        },
        "variants": [
            {"name": "logits", "overrides": {"distill.knowledge": [{"type": "logits"}]}},
            {"name": "hidden", "overrides": ["distill.knowledge=[{type: logits}, {type: hidden}]"]},
        ],
        "seeds": [1, 2],
        "plot": {"scatter": True},
    }
    study.update(changes)
    (folder / "studies").mkdir(exist_ok=True)
    (folder / "base.yaml").write_text((CONFIGS / "demo.yaml").read_text())
    path = folder / "studies" / "tiny.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@needs_data(GLUE)
@pytest.mark.slow
def test_study_runs_shares_the_teacher_and_resumes(tiny_teacher, tmp_path, monkeypatch):
    # A teacher that knows the evaluation slice: it beats the majority class, so every run
    # keeps a share of a real gain.
    teacher = save_teacher_fit_to_eval(
        tiny_teacher, tmp_path / "teacher", "task.max_eval_samples=32", "task.max_length=32"
    )
    path = write_study(tmp_path, teacher)
    calls = {"finetune": 0, "distill": 0}
    real_finetune, real_distill = pipeline.finetune, pipeline.distill

    def finetune(*args, **kwargs):
        calls["finetune"] += 1
        return real_finetune(*args, **kwargs)

    def distill(config, *args, **kwargs):
        calls["distill"] += 1
        if calls["distill"] == 4 and interrupt:
            raise KeyboardInterrupt("simulated interruption")
        return real_distill(config, *args, **kwargs)

    monkeypatch.setattr(pipeline, "finetune", finetune)
    monkeypatch.setattr(pipeline, "distill", distill)
    interrupt = True
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code != 0, "the interruption ends the study"
    out = tmp_path / "out"
    # Three runs finished before the interruption; tables already cover them.
    assert len(list(out.glob("runs/*/result.json"))) == 3
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 3
    assert calls == {"finetune": 1, "distill": 4}

    interrupt = False
    calls.update(finetune=0, distill=0)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == 0, result.output
    assert calls == {"finetune": 0, "distill": 1}, "only the unfinished run may run again"
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())

    # One teacher, fine-tuned once, shared by all runs (which distil with finetune: null).
    teachers = list((out / "teachers").iterdir())
    assert len(teachers) == 1 and teachers[0].name.startswith("sst2-")
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [r["run_id"] for r in rows] == [
        "sst2__logits__seed1",
        "sst2__hidden__seed1",
        "sst2__logits__seed2",
        "sst2__hidden__seed2",
    ]
    result_json = json.loads((out / "runs/sst2__hidden__seed2/result.json").read_text())
    assert result_json["config"]["finetune"] is None
    assert result_json["config"]["teacher"]["name"] == str(teachers[0] / "teacher")
    assert result_json["overrides"][-1] == "seed=2"
    assert 0 <= result_json["metrics"]["accuracy"] <= 1
    assert result_json["retention_pct"] > 0 and result_json["speedup"] > 0
    assert result_json["parameters"] < result_json["teacher_parameters"]
    # Training time comes from the student's own record (it survives resumed runs).
    record = json.loads((out / "runs/sst2__hidden__seed2/student/training.json").read_text())
    assert result_json["train_seconds"] == record["train_seconds"] > 0
    assert (out / "runs/sst2__hidden__seed2/report.json").is_file()
    assert not list(out.glob("runs/*/checkpoints/*/checkpoint-*")), "checkpoints are dropped"

    summary = (out / "summary.md").read_text()
    assert "4 of 4 runs finished" in summary and "| logits | 2 |" in summary
    assert "Trivial baseline (majority class): accuracy" in summary and "gain kept %" in summary
    (measured,) = json.loads((out / "teachers.json").read_text()).values()
    # How far from converged the shared teacher stopped: its record and curve, in the summary.
    assert measured["training"]["steps"] == 1 and measured["training"]["train_seconds"] > 0
    assert measured["training"]["learning_curve"]["points"][0][0] == 1
    assert "Teacher training: 1 steps" in summary and "too few points to judge" in summary
    floor, top = measured["baseline"]["accuracy"], measured["metrics"]["accuracy"]
    assert top > floor + 0.2, (top, floor)
    gain = 100 * (result_json["metrics"]["accuracy"] - floor) / (top - floor)
    assert result_json["gain_kept_pct"] == pytest.approx(gain)
    assert float(rows[-1]["gain_kept_pct"]) == pytest.approx(gain)
    assert summary.count(" ± ") >= 8, summary
    assert (out / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "retention_vs_speedup.png").stat().st_size > 1000

    result = runner.invoke(app, ["study", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "4 finished" in result.output and "sst2__hidden__seed2" in result.output


@needs_data(GLUE)
def test_grid_over_unknown_field_fails_before_training(tiny_teacher, tmp_path):
    path = write_study(tmp_path, tiny_teacher, grid={"student.num_layer": [1, 2]})
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == 2
    text = result.output.replace("\n", " ")
    assert "student.num_layer" in text and "did you mean 'num_layers'" in text
    assert not (tmp_path / "out").exists(), "nothing may be written before the error"


@needs_data(GLUE)
def test_every_run_is_validated_before_the_first_trains(tiny_teacher, tmp_path):
    # The second grid value is deeper than the 4-layer teacher: caught up front.
    path = write_study(tmp_path, tiny_teacher, grid={"student.num_layers": [1, 8]})
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == 2
    assert "num_layers=8" in result.output and "deeper" in result.output.replace("\n", " ")
    assert not (tmp_path / "out").exists()


@needs_data(GLUE)
def test_dry_run_lists_runs(tiny_teacher, tmp_path):
    path = write_study(tmp_path, tiny_teacher, grid={"student.num_layers": [1, 2]})
    result = runner.invoke(app, ["study", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "8 runs: 0 finished, 8 to run" in result.output.replace("\n", " ")
    assert "sst2__hidden__num_layers=1__seed2" in result.output
    assert "to fine-tune" in result.output
    assert not (tmp_path / "out").exists()
    assert runner.invoke(app, ["study", "--help"]).exit_code == 0


def test_study_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "output_dir": "o", "base": {}, "sedes": [1]}))
    with pytest.raises(ConfigError, match="did you mean 'seeds'"):
        studies.load_study(bad)
    bad.write_text(
        yaml.safe_dump({"name": "x", "output_dir": "o", "base": {}, "grid": {"seed": [1, 2]}})
    )
    with pytest.raises(ConfigError, match="use `seeds:`"):
        studies.load_study(bad)
    bad.write_text(
        yaml.safe_dump({"name": "x", "output_dir": "o", "base": {}, "plot": {"x": "depth"}})
    )
    with pytest.raises(ConfigError, match="plot.x 'depth'"):
        studies.load_study(bad)


def test_plan_order_ids_and_value_round_trip(tmp_path):
    study = studies.StudyConfig(
        name="p",
        output_dir=tmp_path / "o",
        base={"task": {"name": "sst2"}, "finetune": {"max_steps": 1}},
        tasks={"a": {"task.max_length": 64}, "b": ["task.max_length=128"]},
        grid={
            "distill.train.learning_rate": [1e-5, 3.0e-4],
            "distill.knowledge": [[{"type": "logits"}], [{"type": "hidden", "layers": "first"}]],
        },
        seeds=[7, 8],
    )
    plan = studies.plan_study(study)
    assert len(plan.runs) == 2 * 2 * 2 * 2
    first = plan.runs[0]
    assert first.run_id == "a__learning_rate=1.0e-05__knowledge=_type_logits__seed7"
    assert first.config.distill.train.learning_rate == 1e-5
    assert first.config.seed == 7 and first.config.finetune is None
    assert plan.runs[-1].config.task.max_length == 128
    assert plan.runs[-1].config.distill.knowledge[0].layers == "first"
    # One shared teacher per task (seed-independent), fine-tuned with the base's seed.
    assert len(plan.teachers) == 2
    assert {t.config.seed for t in plan.teachers.values()} == {42}
    assert {r.teacher.key for r in plan.runs if r.task == "a"} == {plan.runs[0].teacher.key}


def test_pareto_front_keeps_only_undominated_points():
    from kdformer.studies.plots import pareto_front

    points = [(1, 100), (1.5, 99), (2, 97), (3, 92), (3.5, 95), (6, 64), (7, 65), (2, 96)]
    assert pareto_front(points) == [(1, 100), (1.5, 99), (2, 97), (3.5, 95), (7, 65)]
    assert pareto_front([(2, 50)]) == [(2, 50)]


@pytest.mark.parametrize("path", sorted((CONFIGS / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_studies_plan(path):
    """Every shipped study file parses and expands into distinct runs that share teachers."""
    study, folder = studies.load_study(path)
    plan = studies.plan_study(study, folder)
    assert len(plan.runs) == len({r.run_id for r in plan.runs}) >= 8
    assert len(plan.teachers) == len({r.task for r in plan.runs})
    assert all(str(t.root).startswith("runs/studies/teachers/") for t in plan.teachers.values())


def test_shipped_studies_share_one_teacher_per_task():
    keys: dict[str, set[str]] = {}
    for path in (CONFIGS / "studies").glob("*.yaml"):
        plan = studies.plan_study(*studies.load_study(path))
        for run in plan.runs:
            keys.setdefault(run.task, set()).add(run.teacher.key)
    assert set(keys) == {"sst2", "mrpc", "conll2003"}
    assert all(len(found) == 1 for found in keys.values()), keys


@needs_data(GLUE)
@pytest.mark.slow
def test_study_arms_share_one_teacher_cache_entry(tiny_teacher, tmp_path):
    """Every run of a study on one teacher and data reads one cache entry: the first arm fills
    the logits, the second adds only the hidden states it lacks."""
    cache = tmp_path / "cache"
    path = write_study(tmp_path, tiny_teacher, seeds=[1])
    study = yaml.safe_load(path.read_text())
    study["overrides"]["distill.cache"] = {"enabled": True, "dir": str(cache)}
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == 0, result.output
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    items = sorted(p.name for p in entry.iterdir() if p.is_dir())
    assert items == ["hidden.2-float16", "hidden.4-float16", "out.logits-float16"]
    assert result.output.count("teacher cache: computing") == 2
    assert "computing 2 item(s)" in result.output  # the second arm: its hidden states only


@needs_data(GLUE)
@pytest.mark.slow
def test_results_dir_keeps_progress_when_the_output_dir_is_gone(
    tiny_teacher, tmp_path, monkeypatch
):
    """A study spanning sessions: results_dir receives each finished run's result and the
    tables; with output_dir deleted (a fresh clone), those runs count as finished and only
    the missing one trains."""
    import shutil

    published = tmp_path / "published"
    path = write_study(
        tmp_path, tiny_teacher, seeds=[1], results_dir=str(published), plot={"scatter": False}
    )
    assert runner.invoke(app, ["study", str(path)]).exit_code == 0
    assert sorted(p.name for p in (published / "runs").iterdir()) == [
        "sst2__hidden__seed1.json",
        "sst2__logits__seed1.json",
    ]
    for name in ("runs.csv", "summary.md", "teachers.json", "study.yaml", "bars.png"):
        assert (published / name).is_file(), name
    kept = json.loads((published / "runs/sst2__logits__seed1.json").read_text())
    assert kept == json.loads((tmp_path / "out/runs/sst2__logits__seed1/result.json").read_text())

    shutil.rmtree(tmp_path / "out")
    (published / "runs/sst2__hidden__seed1.json").unlink()
    calls = {"finetune": 0, "distill": 0}
    real_finetune, real_distill = pipeline.finetune, pipeline.distill

    def count(name, real):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(pipeline, "finetune", count("finetune", real_finetune))
    monkeypatch.setattr(pipeline, "distill", count("distill", real_distill))
    dry = runner.invoke(app, ["study", str(path), "--dry-run"])
    assert "1 finished" in dry.output, dry.output
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == 0, result.output
    assert calls == {"finetune": 1, "distill": 1}  # the teacher again, then the missing run
    rows = list(csv.DictReader((published / "runs.csv").open()))
    assert [r["run_id"] for r in rows] == ["sst2__logits__seed1", "sst2__hidden__seed1"]
    assert float(rows[0]["accuracy"]) == pytest.approx(kept["metrics"]["accuracy"])


CONVERGED = sorted((CONFIGS / "studies" / "converged").glob("*.yaml"))


@pytest.mark.parametrize("path", CONVERGED, ids=lambda p: p.stem)
def test_converged_studies_rerun_the_originals_at_their_budget(path):
    """Each converged study keeps its original's runs, distils from the plateau teachers (no
    fine-tuning), runs 5x (knowledge, initialisation, width-depth) or 3x the original 60
    steps with three seeds, and publishes its results into docs/."""
    study, folder = studies.load_study(path)
    plan = studies.plan_study(study, folder)
    original = studies.plan_study(*studies.load_study(CONFIGS / "studies" / path.name))
    points = {(r.task, r.point) for r in plan.runs}
    assert {(r.task, r.point) for r in original.runs} <= points
    assert study.seeds == [1, 2, 3]
    assert study.results_dir == Path("docs/studies/converged") / path.stem
    factor = 5 if path.stem in {"knowledge_types", "initialisation", "width_depth"} else 3
    assert {r.config.distill.train.max_steps for r in plan.runs} == {60 * factor}
    assert {t.key for t in plan.teachers.values()} == {
        "runs/teachers/sst2/teacher",
        "runs/teachers/mrpc/teacher",
    }
    assert all(t.config is None for t in plan.teachers.values())
    sst2 = {r.config.task.max_train_samples for r in plan.runs if r.task == "sst2"}
    assert sst2 == {60 * factor * 32}  # each sentence seen once


def test_converged_studies_cover_every_original_but_ner():
    originals = {p.stem for p in (CONFIGS / "studies").glob("*.yaml")}
    assert {p.stem for p in CONVERGED} == originals - {"ner_knowledge", "width_depth_long"}


def test_squad_recipe_study_pairs_every_kd_run_with_no_kd():
    """The SQuAD recipe study distils from the plateau teacher as given, in the teacher's own
    windows, scores on every held-out question, and has a no-KD run of the same shape and
    budget beside each KD run (the issue's "KD vs no-KD at each")."""
    study, folder = studies.load_study(CONFIGS / "studies" / "recipes" / "squad.yaml")
    plan = studies.plan_study(study, folder)
    assert {t.key for t in plan.teachers.values()} == {"runs/teachers/squad/teacher"}
    assert all(t.config is None for t in plan.teachers.values())
    shapes = {}
    for run in plan.runs:
        config = run.config
        assert (config.task.max_length, config.task.doc_stride) == (384, 128)
        assert config.task.max_eval_samples is None
        assert config.distill.cache
        key = (config.student.num_layers, config.distill.train.epochs)
        shapes.setdefault(key, set()).add(bool(config.distill.knowledge))
    assert shapes and all(kinds == {True, False} for kinds in shapes.values()), shapes
    assert {layers for layers, _ in shapes} == {3, 4}
