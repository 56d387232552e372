"""Bad input to the tools around a run (issue 19, round two): `kdformer convert`, `review`,
`export` and `evaluate`. Each case once ended in a traceback (some after all the training or
measuring), or was accepted and gave the wrong model or record without a word; each is now
refused before the long work with a message that names the problem and the fix."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from conftest import GLUE, needs_data, tiny_bert_config
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config import ConfigError, load_config
from kdformer.config.review import load_review

runner = CliRunner()


def said(result) -> str:
    """The command's output on one line (rich wraps it to the terminal's width)."""
    return " ".join(result.output.split())


def refused(result) -> str:
    """The output of a command that must have stopped with exit code 2 and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return said(result)


def digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


# ---- kdformer convert ----------------------------------------------------------------------


def test_converting_a_local_global_model_to_full_gives_full_attention(tmp_path):
    """A local_global model keeps plain BERT weights, so it is a valid source; its block
    settings were copied into the `full` conversion, which kdformer then loaded (and timed,
    and distilled) with block attention again."""
    from kdformer.attention import IMPLEMENTATION
    from kdformer.attention.local_global import BLOCK_SIZE_KEY
    from kdformer.conversion import convert
    from kdformer.models import load_model

    torch.manual_seed(0)
    source = transformers.BertModel(tiny_bert_config()).eval()
    local = convert(source, "local_global", 64, block_size=8)
    assert local.config._attn_implementation == IMPLEMENTATION
    full = convert(local, "full", 64)
    assert not hasattr(full.config, BLOCK_SIZE_KEY)
    full.save_pretrained(tmp_path / "full")
    loaded = load_model(str(tmp_path / "full"), transformers.AutoModel)
    assert loaded.config._attn_implementation != IMPLEMENTATION


def test_convert_refuses_to_write_over_its_source(tmp_path, tiny_teacher):
    """`-o` naming the source folder once replaced a fine-tuned teacher by its converted
    encoder (its task head dropped), without a word."""
    source = Path(shutil.copytree(tiny_teacher, tmp_path / "teacher"))
    before = digest(source)
    for out in (source, tmp_path / "." / "teacher"):
        result = runner.invoke(app, ["convert", str(source), "-o", str(out), "--to", "full"])
        text = refused(result)
        assert f"cannot write the converted model to {out}: it is the folder of the source" in text
        assert "Choose another output folder" in text
    assert digest(source) == before
    assert transformers.AutoConfig.from_pretrained(source).model_type == "bert"


def test_convert_says_that_the_source_task_head_is_left_out(tmp_path, tiny_teacher):
    """Converting a fine-tuned classifier keeps only its encoder: the trained head was
    dropped without a word (only a later evaluate or distill said the head was untrained)."""
    result = runner.invoke(
        app, ["convert", str(tiny_teacher), "-o", str(tmp_path / "out"), "--to", "full",
              "--max-length", "128"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = said(result)
    assert (
        f"note: only the encoder is converted: the head of {tiny_teacher} "
        f"(BertForSequenceClassification) is left out, so {tmp_path / 'out'} has no trained "
        "task head. Fine-tune it on the task next" in text
    )
    encoder = tmp_path / "encoder"
    transformers.AutoModel.from_pretrained(tiny_teacher).save_pretrained(encoder)
    transformers.AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(encoder)
    result = runner.invoke(
        app, ["convert", str(encoder), "-o", str(tmp_path / "again"), "--to", "full",
              "--max-length", "128"],
    )  # fmt: skip
    assert result.exit_code == 0 and "only the encoder" not in result.output, result.output


def test_a_bigbird_conversion_that_could_never_run_block_sparse_is_refused(tmp_path):
    """BigBird falls back to full attention on inputs not longer than (5 + 2 r) x block;
    converted to 512 positions with the default 64-token blocks (minimum 704), it never ran
    block-sparse: the command saved it, and only a later run refused it."""
    from kdformer.conversion import target_config

    tiny_bert_config().save_pretrained(tmp_path / "src")  # a config is all the checks read
    result = runner.invoke(
        app,
        ["convert", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--to", "bigbird",
         "--max-length", "512"],
    )  # fmt: skip
    text = refused(result)
    assert (
        "BigBird runs block-sparse attention only on inputs longer than (5 + 2 x "
        "num_random_blocks 3) x block_size 64 = 704 tokens, and max_length 512 is not" in text
    )
    assert "Raise max_length above 704, or lower block_size to at most 46" in text
    assert not (tmp_path / "out").exists()
    config = tiny_bert_config()
    with pytest.raises(ConfigError, match="= 704 tokens, and max_length 704 is not"):
        target_config(config, "bigbird", 704)
    assert target_config(config, "bigbird", 705).block_size == 64  # just long enough


# ---- kdformer review -----------------------------------------------------------------------


def write_review(tmp_path: Path, **fields) -> Path:
    review = {
        "output_dir": str(tmp_path / "review"),
        "base": "base.yaml",
        "architectures": [{"name": "full", "convert": {"to": "full"}}],
        "tasks": [{"name": "sst2"}],
        **fields,
    }
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump(review))
    return path


def test_review_tasks_with_one_name_are_refused(tmp_path):
    """Two tasks of one name shared runs/<name>/<architecture> and one table: the review ran
    only the last one and showed it twice."""
    tasks = [{"name": "glue"}, {"name": "glue", "overrides": ["task.name=mrpc"]}]
    with pytest.raises(ConfigError) as caught:
        load_review(write_review(tmp_path, tasks=tasks))
    text = str(caught.value)
    assert "task name(s) ['glue'] repeat in tasks (['glue', 'glue'])" in text
    assert "Give each task its own name" in text


def test_review_lengths_a_nystromformer_cannot_be_timed_at_are_refused(tmp_path):
    """A Nyströmformer is timed with its landmarks following each length: a length that is
    no multiple of num_landmarks once stopped the review after every model was trained."""
    nystrom = {"name": "nystromformer", "convert": {"to": "nystromformer", "num_landmarks": 16}}
    architectures = [{"name": "full", "convert": {"to": "full"}}, nystrom]
    path = write_review(tmp_path, architectures=architectures, lengths=[8, 40, 64])
    with pytest.raises(ConfigError) as caught:
        load_review(path)
    text = str(caught.value)
    assert (
        "architectures.1 (nystromformer): a Nyströmformer with num_landmarks 16 is timed at "
        "lengths that are multiples of 16, and lengths [8, 40] are not" in text
    )
    assert "Use lengths that are multiples of 16" in text
    load_review(write_review(tmp_path, architectures=architectures, lengths=[32, 64]))
    one_per_token = {"to": "nystromformer", "num_landmarks": 64, "max_length": 64}
    full_attention = [architectures[0], {"name": "nystromformer", "convert": one_per_token}]
    load_review(write_review(tmp_path, architectures=full_attention, lengths=[40, 64]))


@needs_data(GLUE)
def test_a_review_output_dir_that_is_a_file_is_refused_before_any_training(
    tmp_path, tiny_teacher, monkeypatch
):
    """With runs_dir elsewhere, the tables' folder was first written after every run had
    trained and been timed: a FileExistsError traceback then."""
    from test_review import ARCHITECTURES, review_file

    monkeypatch.setattr(
        "kdformer.review.runner.pipeline.run", lambda *a, **k: pytest.fail("trained")
    )
    taken = tmp_path / "review.md"
    taken.write_text("the user's notes")
    path = review_file(
        tmp_path, tiny_teacher, ARCHITECTURES[:1], output_dir=str(taken),
        runs_dir=str(tmp_path / "runs"),
    )  # fmt: skip
    text = refused(runner.invoke(app, ["review", str(path)]))
    assert f"output_dir {taken} is a file, not a folder: the review writes its tables" in text
    assert "choose an output_dir you can write to" in text
    assert taken.read_text() == "the user's notes"


# ---- kdformer evaluate ---------------------------------------------------------------------


def test_evaluate_output_dir_that_is_a_file_is_refused_before_measuring(
    tmp_path, tiny_teacher, monkeypatch
):
    """`--output-dir report.md` (a file) once failed with a traceback after every model had
    been scored and timed."""
    monkeypatch.setattr("kdformer.pipeline.measure_models", lambda *a, **k: pytest.fail("measured"))
    taken = tmp_path / "report.md"
    taken.write_text("an old report")
    result = runner.invoke(
        app, ["evaluate", str(tiny_teacher), "--data-dir", str(GLUE), "--output-dir", str(taken)]
    )
    text = refused(result)
    assert f"--output-dir {taken} is a file, not a folder: give a folder" in text
    assert taken.read_text() == "an old report"


@needs_data(GLUE)
def test_lengths_over_the_model_positions_are_refused_before_scoring(
    tmp_path, tiny_teacher, monkeypatch
):
    """A latency length over the model's 128 positions once failed with a tensor-size
    traceback when timing, after scoring (in a run: after training too); `evaluate
    --max-length` over them was accepted."""
    from kdformer import pipeline

    monkeypatch.setattr(
        "kdformer.pipeline.evaluation.measure_loaded", lambda *a, **k: pytest.fail("scored")
    )
    base = ["evaluate", str(tiny_teacher), "--data-dir", str(GLUE), "--no-memory"]
    text = refused(runner.invoke(app, [*base, "--latency-seq-length", "512"]))
    assert (
        "the latency batch's length 512 (report.latency_seq_length; --latency-seq-length of "
        f"kdformer evaluate) is over the position limit of '{tiny_teacher}' (128 tokens): set "
        "it to at most 128" in text
    )
    text = refused(runner.invoke(app, [*base, "--max-length", "512"]))
    assert f"task.max_length 512 is over the position limit of '{tiny_teacher}' (128" in text
    config = load_config(
        "configs/demo.yaml",
        [f"output_dir={tmp_path / 'run'}", f"teacher.name={tiny_teacher}",
         f"task.data_dir={GLUE}", "report.latency_seq_length=512"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="the latency batch's length 512 .* at most 128"):
        pipeline.validate(config, ["evaluate"])


# ---- kdformer export -----------------------------------------------------------------------


def test_an_opset_newer_than_onnx_knows_is_refused_before_loading(tmp_path, tiny_teacher):
    """`--opset 30` once exported, failed to convert, and ended in ONNX Runtime's traceback
    (INVALID_GRAPH) when the export was checked; `export: {opset: 30}` did so after training."""
    import onnx

    from kdformer.pipeline.validation import check_exportable

    newest = onnx.defs.onnx_opset_version()
    model = Path(shutil.copytree(tiny_teacher, tmp_path / "student"))
    result = runner.invoke(app, ["export", str(model), "--opset", str(newest + 2)])
    text = refused(result)
    assert f"opset {newest + 2} is newer than the newest the installed onnx" in text
    assert f"give an opset from 14 to {newest}" in text
    assert not (model / "onnx").exists() and not (model / "onnx.partial").exists()
    config = load_config(
        None, [f"teacher.name={tiny_teacher}", f"export={{enabled: true, opset: {newest + 2}}}"]
    )
    with pytest.raises(ConfigError, match=f"opset {newest + 2} is newer than the newest"):
        check_exportable(config, transformers.AutoConfig.from_pretrained(tiny_teacher))


@pytest.mark.slow
def test_an_opset_the_graph_cannot_be_converted_to_keeps_nothing(tmp_path, tiny_teacher):
    """`--opset 14`: the exporter's converter fails on LayerNormalization (opset 17) and
    leaves the graph at its own opset 18; the export was kept, its export.json saying 14."""
    from kdformer.pipeline.export import export_model

    model = Path(shutil.copytree(tiny_teacher, tmp_path / "student"))
    with pytest.raises(ConfigError) as caught:
        export_model(model, quantize=False, opset=14)
    text = str(caught.value)
    assert "could not convert the graph of BertForSequenceClassification to opset 14" in text
    assert "leaves it at opset 18" in text and "give --opset 18" in text
    assert not (model / "onnx").exists() and not (model / "onnx.partial").exists()


def test_a_file_given_as_the_model_is_named_a_file(tmp_path):
    """An .onnx file (or any file) given as the model once read "model folder ... has no
    config.json"; now it says it is a file and, for an ONNX export, which folder to give."""
    export = tmp_path / "student" / "onnx" / "model.onnx"
    export.parent.mkdir(parents=True)
    export.write_bytes(b"onnx")
    result = CliRunner().invoke(app, ["evaluate", str(export), "--task", "sst2"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"{export} is a file, not a model folder" in text
    assert f"give that model's folder ({tmp_path / 'student'})" in text
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    result = CliRunner().invoke(app, ["evaluate", str(weights), "--task", "sst2"])
    assert result.exit_code == 2 and "give the folder that holds config.json" in result.output
