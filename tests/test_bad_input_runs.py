"""Bad input around runs, round two (issue 19): config files, studies, several teachers, the
teacher cache, --resume/--overwrite and stop signals. Each case once ended in a traceback, was
accepted without a word, or ended wrongly; each now gives a clear error (exit code 2) or the
right behaviour."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
import transformers
import yaml
from conftest import (
    GLUE,
    needs_data,
    save_byte_level_tokenizer,
    wait_for_file,
    write_tiny_sst2_config,
)
from typer.testing import CliRunner

from kdformer import pipeline, studies
from kdformer.cli import app
from kdformer.config import ConfigError, load_config
from kdformer.config.cache import default_cache_dir

runner = CliRunner()


def words(text: str) -> str:
    """Output with its line wrapping undone."""
    return " ".join(text.split())


def tiny_config(tmp_path: Path, teacher: Path, name: str = "run", **train: object) -> Path:
    """The CLI tests' run config: the tiny teacher on 64 SST-2 sentences, teacher cache on."""
    settings = {"max_steps": 4, "batch_size": 8, "save_steps": 2, **train}
    return write_tiny_sst2_config(
        tmp_path / f"{name}.yaml", tmp_path / name, teacher, tmp_path / "cache", settings, 64
    )


def test_an_empty_config_file_is_refused_not_read_as_every_default(tmp_path):
    """An empty run config (or comments only) once ran every default: minilm-l6 on SST-2 from
    the hub, ending offline in an error about nyu-mll/glue that never named the file."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    comments = tmp_path / "comments.yaml"
    comments.write_text("# task: sst2\n")
    for path in (empty, comments):
        for command in (["run", str(path)], ["config", "show", str(path)]):
            result = runner.invoke(app, command)
            assert result.exit_code == 2, result.output
            text = words(result.output)
            assert f"{path} is empty" in text and "names at least its task and teacher" in text
            assert "give the settings as key.sub=value overrides" in text
    # With overrides, an empty file is a blank start: the overrides are the settings.
    result = runner.invoke(app, ["config", "show", str(empty), "seed=3"])
    assert result.exit_code == 0 and "seed: 3" in result.output
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "output_dir": "o", "base": "empty.yaml"}))
    result = runner.invoke(app, ["study", str(study), "--dry-run"])
    assert result.exit_code == 2, result.output
    text = words(result.output)
    assert f"study 's', base: {empty} is empty" in text and "write base: {}" in text


@pytest.mark.parametrize(
    ("where", "key"),
    [("variant 'a'", "seed"), ("variant 'a'", "output_dir"), ("tasks.sst2", "seed"),
     ("the study", "seed")],
)  # fmt: skip
def test_a_study_override_of_seed_or_output_dir_is_refused(tmp_path, where, key):
    """The study sets every run's seed and folder after applying the overrides, so a variant's
    `seed=7` once ran seed 42 without a word (and only fine-tuned another teacher)."""
    value = "7" if key == "seed" else str(tmp_path / "elsewhere")
    data: dict = {"name": "s", "output_dir": str(tmp_path / "o"), "base": {}}
    if where.startswith("variant"):
        data["variants"] = [{"name": "a", "overrides": [f"{key}={value}"]}]
    elif where.startswith("tasks"):
        data["tasks"] = {"sst2": {key: value}}
    else:
        data["overrides"] = [f"{key}={value}"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=f"{where} overrides '{key}', which the study sets"):
        studies.load_study(path)
    result = runner.invoke(app, ["study", str(path), "--dry-run"])
    assert result.exit_code == 2 and "the study sets for every run" in words(result.output)
    if key == "seed":
        assert "use `seeds:`" in result.output


@needs_data(GLUE)
def test_other_teachers_are_checked_before_the_main_teacher_is_fine_tuned(tiny_teacher, tmp_path):
    """An extra teacher without a trained head, with other labels or another tokenizer was
    refused only after the main teacher's fine-tuning (or, for the tokenizer, as the
    *student's*), advising the `finetune:` section the config had."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_teacher)
    model_config = transformers.AutoConfig.from_pretrained(tiny_teacher)
    bare = tmp_path / "bare"  # an encoder without a task head
    transformers.BertModel(model_config).save_pretrained(bare)
    tokenizer.save_pretrained(bare)
    three = tmp_path / "three"  # a head of three labels, SST-2 has two
    model_config.num_labels = 3
    transformers.BertForSequenceClassification(model_config).save_pretrained(three)
    tokenizer.save_pretrained(three)
    other = tmp_path / "other-tokenizer"
    bpe = transformers.AutoTokenizer.from_pretrained(save_byte_level_tokenizer(tmp_path / "bpe"))
    model_config.num_labels, model_config.vocab_size = 2, len(bpe)
    transformers.BertForSequenceClassification(model_config).save_pretrained(other)
    bpe.save_pretrained(other)

    path = tiny_config(tmp_path, tiny_teacher)
    finetune = "finetune={max_steps: 2, batch_size: 8, report_to: []}"
    expected = {
        bare: "distill.teachers: teacher extra '{}' has no trained task head",
        three: "distill.teachers: teacher extra '{}': The model has 3 output(s) but task 'sst2' "
        "needs 2.",
        other: "distill.teachers: teacher extra '{}' has another tokenizer than the teacher",
    }
    for folder, said in expected.items():
        teachers = f"distill.teachers=[{{id: extra, name: {folder}}}]"
        result = runner.invoke(app, ["run", str(path), finetune, teachers])
        assert result.exit_code == 2, result.output
        text = words(result.output)
        assert said.format(folder) in text
        assert "student" not in text.split("error:")[1]
        if folder != other:
            assert "A `finetune:` section fine-tunes only `teacher`" in text
            assert "Fine-tune the teacher on this task first" not in text
        assert not (tmp_path / "run" / "teacher").exists(), "the main teacher was fine-tuned"


@needs_data(GLUE)
def test_overwrite_and_resume_together_are_refused(tiny_teacher, tmp_path):
    """On a finished run, `--overwrite --resume` once resumed the finished run's own last
    checkpoint: the "redone" student was the old one, whatever the config now said."""
    path = tiny_config(tmp_path, tiny_teacher)
    for command in ("distill", "run", "finetune"):
        result = runner.invoke(app, [command, str(path), "--overwrite", "--resume"])
        assert result.exit_code == 2, result.output
        text = words(result.output)
        assert "--overwrite and --resume ask for opposite things" in text
        assert "after an interrupted --overwrite, --resume alone finishes it" in text
    assert not (tmp_path / "run" / "student").exists()
    assert not (tmp_path / "run" / "teacher").exists()
    config = load_config(path)
    with pytest.raises(ConfigError, match="Give one"):
        pipeline.distill(config, overwrite=True, resume=True)


def test_an_empty_cache_dir_means_the_default_not_the_current_folder(tmp_path, monkeypatch):
    """`distill.cache.dir: ""` once read as `.`: cache entries in the folder kdformer ran from,
    where an empty $KDFORMER_CACHE_DIR means the default."""
    for overrides in (["distill.cache.dir="], ["distill.cache={enabled: true, dir: '  '}"]):
        cache = load_config(None, overrides).distill.cache
        assert cache.dir is None and cache.root == default_cache_dir()
    path = tmp_path / "c.yaml"
    path.write_text("distill:\n  cache: {enabled: true, dir: ''}\n")
    assert load_config(path).distill.cache.root == default_cache_dir()
    monkeypatch.setenv("KDFORMER_CACHE_DIR", "")
    assert default_cache_dir() == Path("~/.cache/kdformer/teacher-outputs")


def test_a_cache_on_a_file_system_without_locks_fills_unlocked(tiny_teacher, tmp_path, monkeypatch):
    """flock raises OSError (ENOLCK, EOPNOTSUPP) on some NFS and FUSE mounts: the fill goes on
    without the lock, saying so, instead of ending in a traceback."""
    import errno
    import fcntl

    import datasets

    from kdformer.cache import RowIndexCollator, TeacherCache, with_row_index
    from kdformer.features import FeatureNeeds
    from kdformer.teacher import LiveTeacher

    def no_locks(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_teacher)
    ids = [[101, 1000 + i, 1001 + i, 102] for i in range(8)]
    features = with_row_index(
        datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 4] * 8})
    )
    collate = RowIndexCollator(transformers.DataCollatorWithPadding(tokenizer))
    needs = FeatureNeeds(outputs=frozenset({"logits"}))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_teacher).eval()
    said: list[str] = []
    signal = TeacherCache(tmp_path, log=said.append).prepare(
        model, tokenizer, features, collate, (), needs, 64, batch_size=4,
        live=LiveTeacher(model, needs),
    )  # fmt: skip
    assert any("cannot lock" in m and "filling unlocked" in m for m in said), said
    batch = collate([features[i] for i in (5, 1)])
    torch.testing.assert_close(
        signal(batch).outputs["logits"], LiveTeacher(model, needs)(batch).outputs["logits"],
        atol=1e-2, rtol=1e-2,
    )  # fmt: skip


def test_two_runs_filling_one_cache_entry_at_once_share_it(tiny_teacher, tmp_path):
    """Two runs of one teacher on one data set (two terminals, a study beside a run) once
    filled one entry at the same time: the second deleted the first's half-written item and
    one of them ended in a safetensors traceback. Now the second waits and reuses it."""
    import datasets
    import numpy as np

    from kdformer.cache import RowIndexCollator, TeacherCache, with_row_index
    from kdformer.features import FeatureNeeds
    from kdformer.teacher import LiveTeacher

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_teacher)
    rng = np.random.default_rng(0)
    ids = [[101, *rng.integers(1000, 2000, k).tolist(), 102] for k in rng.integers(3, 12, 24)]
    features = with_row_index(
        datasets.Dataset.from_dict(
            {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
        )
    )
    collate = RowIndexCollator(transformers.DataCollatorWithPadding(tokenizer))
    needs = FeatureNeeds(outputs=frozenset({"logits"}), hidden_states=True,
                         hidden_layers=frozenset({2}))  # fmt: skip

    def teacher():
        model = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_teacher)
        return model.eval()

    second_said: list[str] = []
    second_spoke = threading.Event()
    first, second = teacher(), teacher()
    forward, calls = first.forward, {"n": 0}

    def slow_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the first run's first batch (after its size probe)
            starter.start()
            assert second_spoke.wait(timeout=120), "the second run never started its fill"
        if calls["n"] >= 2:
            time.sleep(0.05)  # the rest of the fill, while the second run goes on
        return forward(*args, **kwargs)

    first.forward = slow_forward
    results: dict[str, object] = {}

    def fill(name: str, model, log) -> None:
        try:
            results[name] = TeacherCache(tmp_path, log=log).prepare(
                model, tokenizer, features, collate, (), needs, 64, batch_size=4,
                live=LiveTeacher(model, needs),
            )  # fmt: skip
        except Exception as error:  # reported below, with the other run's outcome
            results[name] = error

    def second_log(message: str) -> None:
        second_said.append(message)
        second_spoke.set()

    starter = threading.Thread(target=fill, args=("second", second, second_log))
    fill("first", first, lambda message: None)
    starter.join(timeout=300)
    errors = {k: v for k, v in results.items() if isinstance(v, Exception)}
    assert not errors, errors
    assert "another run is filling" in second_said[0]
    assert "reusing" in second_said[-1]
    batch = collate([features[i] for i in (3, 0, 17)])
    for name in ("first", "second"):
        read = results[name](batch).outputs["logits"]  # type: ignore[operator]
        torch.testing.assert_close(read, LiveTeacher(first, needs)(batch).outputs["logits"],
                                   rtol=1e-2, atol=1e-3)  # fmt: skip


@needs_data(GLUE)
@pytest.mark.slow
def test_sighup_says_what_was_kept_and_nohup_keeps_running(tiny_teacher, tmp_path, monkeypatch):
    """A closed terminal or SSH session (SIGHUP) once killed a run without a word, where
    SIGTERM and Ctrl-C say what was kept and how to resume; a run under `nohup` (SIGHUP
    ignored) keeps running, as asked."""
    path = tiny_config(tmp_path, tiny_teacher, "hup", max_steps=40, save_total_limit=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kdformer.cli", "distill", str(path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a run started from a terminal: SIGHUP at its default, even when the tests themselves
        # run under nohup (which the child would inherit, and rightly keep running under)
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )  # fmt: skip
    checkpoint = tmp_path / "hup" / "checkpoints" / "student" / "checkpoint-4"
    wait_for_file(process, checkpoint / "trainer_state.json")
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 129, stderr[-2000:]
    text = words(stderr)
    assert "terminated (SIGHUP)" in text and "checkpoint-" in text
    assert f"kdformer distill {path} --resume" in text.split("Continue with:")[1]
    assert not (tmp_path / "hup" / "student").exists()

    # Under nohup the hangup is ignored: the command leaves it so and finishes.
    def hangs_up(config, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.2)
        return None

    monkeypatch.setattr(pipeline, "distill", hangs_up)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        result = runner.invoke(app, ["distill", str(path)])
        assert result.exit_code == 0, result.output
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


@needs_data(GLUE)
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stopped_study_says_what_was_kept_and_how_to_continue(
    tiny_teacher, tmp_path, monkeypatch, stop
):
    """Ctrl-C during `kdformer study` once ended with exit code 130 and no word, SIGTERM with
    no word at all; now both say which runs finished and which checkpoints it resumes from."""
    from kdformer.cli import Terminated

    config = tiny_config(tmp_path, tiny_teacher)
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump({"name": "s", "output_dir": str(tmp_path / "study"), "base": str(config),
                        "seeds": [1, 2]})
    )  # fmt: skip

    def stopped(plan, *args, **kwargs):
        folder = plan.runs[0].folder / "checkpoints" / "student" / "checkpoint-2"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text('{"global_step": 2}')
        safetensors.torch.save_file({"w": torch.zeros(1)}, folder / "model.safetensors")
        raise KeyboardInterrupt if stop == "ctrl-c" else Terminated(signal.SIGTERM)

    monkeypatch.setattr(studies, "run_study", stopped)
    monkeypatch.setattr(sys, "argv", ["kdformer", "study", str(path)])
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == (130 if stop == "ctrl-c" else 143), result.output
    text = words(result.output)
    assert ("interrupted." if stop == "ctrl-c" else "terminated (SIGTERM).") in text
    assert "finished runs 0 of 2" in text and "checkpoint-2" in text
    assert text.endswith(f"Continue with: kdformer study {path}")


def test_after_a_hang_up_the_lost_terminal_is_not_written_to():
    """Once the terminal is gone, writing to it raises EIO: a progress bar closing while the
    run unwinds turned the clean SIGHUP exit into a traceback. The handler points standard
    output and error that are terminals at the null device; a redirected stream is kept."""
    code = "\n".join([
        "import os, pty, sys",
        "from kdformer.cli import _detach_from_terminal",
        "master, slave = pty.openpty()",
        "os.dup2(slave, 1); os.close(slave); os.close(master)  # the terminal hangs up",
        "try:",
        "    os.write(1, b'x')",
        "except OSError as error:",
        "    sys.stderr.write(f'before: errno {error.errno}\\n')",
        "_detach_from_terminal()",
        "os.write(1, b'after')",
        "sys.stderr.write('stderr kept\\n')",
    ])  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "before: errno 5" in done.stderr and "stderr kept" in done.stderr
