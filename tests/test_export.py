"""`kdformer export`: ONNX that matches PyTorch, int8 that is measured, reports that carry both,
and exports that never pose as another model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from conftest import GLUE, needs_data, save_tiny_glue_teacher, write_tiny_sst2_config
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config import ConfigError
from kdformer.export import OnnxModel
from kdformer.models import resolve_name
from kdformer.pipeline.export import check_batches, export_model, export_record, exported_models

runner = CliRunner()


def _save(folder, model_class, config):
    transformers.set_seed(0)
    model = model_class(config).eval()
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(resolve_name("minilm-l6")).save_pretrained(folder)
    return model


SMALL = dict(
    vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=64,
)  # fmt: skip


def ort_outputs(path, batch) -> dict[str, np.ndarray]:
    """An ONNX file's outputs on ``batch``, run by plain onnxruntime (not kdformer's wrapper)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name].numpy().astype(np.int64) for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def ort_check(model, path, batches) -> tuple[float, float]:
    """(largest absolute difference from PyTorch over every output, share of the same argmax
    over the ``*logits`` outputs: per example, or per real token for token outputs), computed
    here from onnxruntime's outputs on the export's check batches."""
    worst, same, total = 0.0, 0, 0
    for batch in batches:
        with torch.no_grad():
            want = {k: v.numpy() for k, v in model(**batch).items()}
        got = ort_outputs(path, batch)
        real = batch["attention_mask"].numpy().astype(bool)
        for name, value in got.items():
            worst = max(worst, float(np.abs(want[name] - value).max()))
            if name.endswith("logits"):
                hit = want[name].argmax(-1) == value.argmax(-1)
                hit = hit[real] if hit.shape == real.shape else hit
                same, total = same + int(hit.sum()), total + hit.size
    return worst, same / total


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_class,config",
    [
        (transformers.BertForSequenceClassification, transformers.BertConfig(**SMALL, num_labels=3)),
        (transformers.BertForTokenClassification, transformers.BertConfig(**SMALL, num_labels=5)),
        (transformers.BertForQuestionAnswering, transformers.BertConfig(**SMALL)),
        (
            transformers.DistilBertForSequenceClassification,
            transformers.DistilBertConfig(
                vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                max_position_embeddings=64,
            ),
        ),
        (
            transformers.RobertaForSequenceClassification,
            transformers.RobertaConfig(**{**SMALL, "max_position_embeddings": 66}),
        ),
    ],
    ids=["bert-cls", "bert-ner", "bert-qa", "distilbert", "roberta"],
)  # fmt: skip
def test_export_matches_pytorch_on_padded_batches_of_new_shapes(tmp_path, model_class, config):
    model = _save(tmp_path / "m", model_class, config)
    record = export_model(tmp_path / "m")
    folder = tmp_path / "m" / "onnx"
    assert sorted(p.name for p in folder.glob("*.onnx")) == ["model.onnx", "model_quantized.onnx"]
    assert not (tmp_path / "m" / "onnx.partial").exists()
    assert record["max_abs_diff"] <= 1e-4
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
    assert record["size_mb"]["onnx_int8"] < record["size_mb"]["onnx"]
    # The folder is what optimum / onnxruntime users load: config, tokenizer and the graph.
    assert transformers.AutoConfig.from_pretrained(folder).model_type == config.model_type
    transformers.AutoTokenizer.from_pretrained(folder)
    # A batch of yet another shape (5 x 23, two padded rows) through the saved file.
    exported = OnnxModel(folder / "model.onnx", model.config, 0)
    ids = torch.randint(1000, 30522, (5, 23), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 7:] = mask[4, 15:] = 0
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask)
    got = exported(input_ids=ids, attention_mask=mask)
    assert exported.output_names == record["outputs"]
    for name in record["outputs"]:
        keep = mask.bool() if want[name].dim() >= 2 and want[name].shape[1] == 23 else slice(None)
        torch.testing.assert_close(got[name][keep], want[name][keep], atol=1e-4, rtol=1e-4)
    # int8 changes the numbers a little, not the predictions of a random model on most rows;
    # the recorded figures are those onnxruntime gives on the check batches, counted here.
    assert 0.5 <= record["int8_agreement"] <= 1.0
    assert 0 < record["int8_max_abs_diff"] < 1.0
    batches = check_batches(model)
    worst, same = ort_check(model, folder / "model_quantized.onnx", batches)
    assert record["int8_agreement"] == pytest.approx(same, abs=1e-12)
    assert record["int8_max_abs_diff"] == pytest.approx(worst, rel=1e-5)
    assert record["max_abs_diff"] == pytest.approx(ort_check(model, folder / "model.onnx",
                                                             batches)[0], rel=1e-5, abs=1e-6)  # fmt: skip


@pytest.mark.slow
def test_export_is_refused_for_an_unfinished_folder_and_a_failed_check_keeps_nothing(
    tmp_path, monkeypatch
):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a finished model folder"):
        export_model(tmp_path / "half")
    result = runner.invoke(app, ["export", str(tmp_path / "half")])
    assert result.exit_code == 2 and "not a finished model folder" in result.output

    _save(
        tmp_path / "m", transformers.BertForSequenceClassification, transformers.BertConfig(**SMALL)
    )
    monkeypatch.setattr("kdformer.pipeline.export.max_difference", lambda *a: 0.5)
    with pytest.raises(ConfigError, match=r"differs from PyTorch by 0\.5 .*nothing was kept"):
        export_model(tmp_path / "m")
    assert not (tmp_path / "m" / "onnx").exists()
    assert not (tmp_path / "m" / "onnx.partial").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["activation", "weight"])
def test_an_export_that_really_differs_from_pytorch_is_refused_and_the_good_one_kept(
    tmp_path, monkeypatch, fault
):
    """Nothing patched in the check: the exported graph itself computes something else, the
    first layer's GELU traced as a softplus ("activation") or the classifier's weights doubled in
    the ONNX file after the export ("weight"). The check measures the real difference on new
    shapes, refuses the export naming it, keeps nothing of it and leaves the earlier export."""
    import onnx
    from onnx import numpy_helper

    from kdformer.pipeline import export as export_stage

    cls = transformers.BertForSequenceClassification
    _save(tmp_path / "m", cls, transformers.BertConfig(**SMALL, num_labels=3))
    good = export_model(tmp_path / "m", quantize=False)
    real_export = export_stage.export_onnx

    def break_model(model):
        """Apply the fault to a PyTorch model; returns how to undo it."""
        if fault == "activation":
            intermediate = model.bert.encoder.layer[0].intermediate
            act = intermediate.intermediate_act_fn
            intermediate.intermediate_act_fn = torch.nn.Softplus()
            return lambda: setattr(intermediate, "intermediate_act_fn", act)
        with torch.no_grad():
            model.classifier.weight.mul_(2.0)
        return lambda: model.classifier.weight.data.div_(2.0)

    def faulty_export(model, inputs, path, opset):
        if fault == "activation":  # traced with the softplus, then the model is as it was
            undo = break_model(model)
            try:
                return real_export(model, inputs, path, opset)
            finally:
                undo()
        outputs = real_export(model, inputs, path, opset)
        proto = onnx.load(str(path))
        (weight,) = [t for t in proto.graph.initializer if t.name.endswith("classifier.weight")]
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2, weight.name))
        onnx.save(proto, str(path))
        return outputs

    # The difference the faulty graph should show, computed in PyTorch alone.
    model = cls.from_pretrained(tmp_path / "m").eval()
    broken = cls.from_pretrained(tmp_path / "m").eval()
    break_model(broken)
    with torch.no_grad():
        expected = max(
            float((model(**b).logits - broken(**b).logits).abs().max())
            for b in check_batches(model)
        )
    assert expected > 1e-3  # ten times the 1e-4 tolerance: a real fault, not rounding

    monkeypatch.setattr("kdformer.pipeline.export.export_onnx", faulty_export)
    with pytest.raises(ConfigError, match=r"differs from PyTorch by .*nothing was kept") as info:
        export_model(tmp_path / "m", overwrite=True)
    reported = float(str(info.value).split("differs from PyTorch by ")[1].split(" ")[0])
    assert reported == pytest.approx(expected, rel=5e-3)
    assert "(over --atol 0.0001)" in str(info.value)
    assert not (tmp_path / "m" / "onnx.partial").exists()
    assert export_record(tmp_path / "m") == good  # the earlier, correct export stays
    assert exported_models(tmp_path / "m") == [("onnx", tmp_path / "m" / "onnx" / "model.onnx")]


@pytest.mark.slow
def test_an_export_of_other_weights_is_stale_and_left_out(tmp_path):
    model = _save(
        tmp_path / "m", transformers.BertForSequenceClassification, transformers.BertConfig(**SMALL)
    )
    export_model(tmp_path / "m", quantize=False)
    assert [name for name, _ in exported_models(tmp_path / "m")] == ["onnx"]
    again = export_model(tmp_path / "m", quantize=False)  # up to date: not redone
    assert again["max_abs_diff"] <= 1e-4
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(tmp_path / "m")  # retrained weights, old export
    assert exported_models(tmp_path / "m") == []
    record = export_model(tmp_path / "m")  # redone for the new weights, now with int8
    assert [name for name, _ in exported_models(tmp_path / "m")] == ["onnx", "onnx int8"]
    assert record["quantized"]


def test_check_batches_pad_a_row_and_follow_the_model_inputs(tmp_path):
    distil = transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(vocab_size=2000, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    )
    batches = check_batches(distil)
    assert [tuple(b["input_ids"].shape) for b in batches] == [(3, 9), (2, 40)]
    assert all("token_type_ids" not in b for b in batches)  # DistilBERT takes none
    assert batches[0]["attention_mask"][0].tolist() == [1] * 4 + [0] * 5


@pytest.mark.slow
@needs_data(GLUE / "SST-2")
def test_export_cli_adds_onnx_and_int8_rows_to_the_report_and_card(tmp_path, tiny_teacher):
    config = write_tiny_sst2_config(
        tmp_path / "run.yaml", tmp_path / "run", tiny_teacher, tmp_path / "cache",
        {"max_steps": 4, "batch_size": 16}, 64, memory=True,
    )  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    kdformer = [sys.executable, "-m", "kdformer.cli"]
    done = subprocess.run([*kdformer, "run", str(config)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    student = tmp_path / "run" / "student"
    before = json.loads((student / "report.json").read_text())
    assert [m["name"] for m in before["models"]] == ["teacher", "student"]
    assert all(m["memory_mib"] > 0 for m in before["models"])  # measured in fresh processes

    done = subprocess.run(
        [*kdformer, "export", str(student)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    rows = {m["name"]: m for m in report["models"]}
    assert list(rows) == ["teacher", "student", "student (onnx)", "student (onnx int8)"]
    assert report["latency_setup"]["device"] == "cpu"
    # Same weights, same predictions: the ONNX student scores what the PyTorch one scores.
    assert rows["student (onnx)"]["metrics"] == pytest.approx(rows["student"]["metrics"])
    assert rows["student (onnx)"]["metrics"] == pytest.approx(before["models"][1]["metrics"])
    for name in ("student (onnx)", "student (onnx int8)"):
        row = rows[name]
        assert row["parameters"] == rows["student"]["parameters"]
        assert row["latency_ms"] > 0 and row["memory_mib"] > 0
        assert row["size_mb"] == pytest.approx(
            (student / row["export"]["file"].split("/", 1)[1]).stat().st_size / 2**20
        )
        assert row["retention_pct"] is not None
    assert rows["student (onnx int8)"]["size_mb"] < rows["student (onnx)"]["size_mb"]
    assert rows["student (onnx)"]["export"]["max_abs_diff"] <= 1e-4
    card = (student / "README.md").read_text()
    assert "## ONNX" in card and "| student (onnx int8) |" in card and "peak MiB" in card
    assert (tmp_path / "run" / "report.md").read_text().count("student (onnx") >= 2

    # A later `kdformer evaluate` stage keeps the rows while the export matches the weights.
    done = subprocess.run(
        [*kdformer, "run", str(config), "--stages", "evaluate", "report.device=cpu",
         "report.memory=false"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [m["name"] for m in again["models"]][2:] == ["student (onnx)", "student (onnx int8)"]


@pytest.mark.slow
def test_memory_is_measured_in_a_fresh_process_with_weights_and_forward(tmp_path):
    from kdformer.report.memory import inference_peak_mib

    folder = save_tiny_glue_teacher(tmp_path / "m")
    small = inference_peak_mib(folder, "BertForSequenceClassification", 16, 1)
    large = inference_peak_mib(folder, "BertForSequenceClassification", 128, 64)
    # 64 x 128 tokens through 4 x 32-wide layers with 4 heads: attention maps alone are
    # 64 * 4 * 128 * 128 * 4 bytes = 16 MiB; 1 x 16 tokens needs next to nothing.
    assert large["forward_mib"] > small["forward_mib"] + 8
    assert large["total_mib"] >= large["forward_mib"]
    # weights: 30522 x 32 embeddings (3.7 MiB) at least
    assert small["total_mib"] - small["forward_mib"] > 3


@pytest.mark.slow
def test_efficient_attention_exports_or_says_why_not(tmp_path, monkeypatch):
    """kdformer's local + global attention exports; Longformer's data-dependent global
    attention does not trace, and a fixed-length Nyströmformer is refused before trying."""
    from conftest import save_tiny_glue_teacher

    from kdformer.conversion import convert_checkpoint

    teacher = save_tiny_glue_teacher(tmp_path / "t")
    local = convert_checkpoint(teacher, "local_global", tmp_path / "lg", 256, block_size=16)
    assert export_model(local, quantize=False)["max_abs_diff"] <= 1e-4
    # Traced at exactly one 16-token block, the graph fixes the block count: the check on other
    # shapes catches it, and the good export already there stays.
    monkeypatch.setattr("kdformer.pipeline.export.TRACE_SHAPE", (2, 16))
    with pytest.raises(ConfigError, match="fails on inputs of other shapes than the traced one"):
        export_model(local, quantize=False, overwrite=True)
    assert exported_models(local) == [("onnx", local / "onnx" / "model.onnx")]
    monkeypatch.undo()

    long = dict(SMALL, max_position_embeddings=130)
    _save(tmp_path / "lf", transformers.LongformerForSequenceClassification,
          transformers.LongformerConfig(**long, attention_window=[8, 8]))  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"could not export Longformer.*data-dependent.*local_global"
    ):
        export_model(tmp_path / "lf")
    assert (
        not (tmp_path / "lf" / "onnx").exists() and not (tmp_path / "lf" / "onnx.partial").exists()
    )

    _save(tmp_path / "ny", transformers.NystromformerForSequenceClassification,
          transformers.NystromformerConfig(**long, segment_means_seq_len=64, num_landmarks=8))  # fmt: skip
    result = runner.invoke(app, ["export", str(tmp_path / "ny")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "one fixed length (64 tokens)" in " ".join(result.output.split())


@pytest.mark.slow
@needs_data(GLUE / "SST-2")
def test_export_true_in_a_run_config_adds_the_rows(tmp_path, tiny_teacher):
    from kdformer import pipeline
    from kdformer.config import load_config

    overrides = [
        f"output_dir={tmp_path / 'run'}", f"teacher.name={tiny_teacher}", f"task.data_dir={GLUE}",
        "task.max_train_samples=32", "task.max_eval_samples=8", "task.max_length=32",
        "student.num_layers=2", "distill.allow_weak_teacher=true",
        "distill.train={max_steps: 2, batch_size: 8, report_to: []}",
        "report={latency_repeats: 1, latency_batch_size: 2, latency_seq_length: 16,"
        " memory: false, device: cpu}",
        "export=true",
    ]  # fmt: skip
    config = load_config(None, overrides)
    report = pipeline.run(config)
    names = [m["name"] for m in report["models"]]
    assert names == ["teacher", "student", "student (onnx)", "student (onnx int8)"]
    assert (tmp_path / "run" / "student" / "onnx" / "model.onnx").is_file()

    # The rows' scores and retention, computed here: the teacher in plain PyTorch, the exported
    # files in plain onnxruntime, on the run's evaluation examples.
    from kdformer.tasks import build_task

    task = build_task(config.task, config.seed)
    examples = task.load("eval")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_teacher)
    features = task.tokenize(examples, tokenizer)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features[0]]
    batch = tokenizer.pad([{k: row[k] for k in keys} for row in features], return_tensors="pt")
    gold = np.asarray(examples["label"])
    teacher = transformers.BertForSequenceClassification.from_pretrained(tiny_teacher).eval()
    with torch.no_grad():
        predicted = {"teacher": teacher(**batch).logits.numpy().argmax(-1)}
    onnx_dir = tmp_path / "run" / "student" / "onnx"
    for name, file in (("student (onnx)", "model.onnx"), ("student (onnx int8)",
                                                           "model_quantized.onnx")):  # fmt: skip
        predicted[name] = ort_outputs(onnx_dir / file, batch)["logits"].argmax(-1)
    accuracy = {name: float((p == gold).mean()) for name, p in predicted.items()}
    rows = {m["name"]: m for m in report["models"]}
    assert report["main_metric"] == "accuracy" and len(gold) == 8
    assert accuracy["teacher"] > 0
    for name, value in accuracy.items():
        assert rows[name]["metrics"]["accuracy"] == pytest.approx(value), name
    for name in ("student (onnx)", "student (onnx int8)"):
        want = 100 * accuracy[name] / accuracy["teacher"]
        assert rows[name]["retention_pct"] == pytest.approx(want), name
    record = export_record(tmp_path / "run" / "student")
    assert rows["student (onnx int8)"]["export"]["agreement"] == record["int8_agreement"]


FOREIGN_CONFIG = """# another tool's experiment config, beside the model folders it wrote
trainer: {max_epochs: 3, accelerator: cpu}
model: {name: bert-tiny, lr: 3.0e-5}
data: {path: data/train.csv}
"""


def test_export_leaves_another_tools_config_yaml_alone(tmp_path, monkeypatch):
    """A valid model folder whose parent holds another tool's config.yaml is exported (not
    scored); kdformer's own config.yaml there is read, and a broken one of kdformer's named."""
    from kdformer.config import load_config
    from kdformer.config.loading import dump_config
    from kdformer.pipeline.export import run_config_of

    student = tmp_path / "student"
    _save(student, transformers.BertForSequenceClassification, transformers.BertConfig(**SMALL))
    (tmp_path / "config.yaml").write_text(FOREIGN_CONFIG)
    exported = []
    monkeypatch.setattr(
        "kdformer.pipeline.export.export_model", lambda folder, *a: exported.append((folder, a))
    )
    result = runner.invoke(app, ["export", str(student)])
    assert result.exit_code == 0, result.output
    assert [(folder, args[-1]) for folder, args in exported] == [(student, None)]  # no task
    text = " ".join(result.output.split())
    assert f"{student} is not a run's student (no kdformer config.yaml next to it)" in text
    assert run_config_of(student) is None

    ours = load_config("configs/demo.yaml", [f"output_dir={tmp_path}"])
    (tmp_path / "config.yaml").write_text(dump_config(ours))
    assert run_config_of(student).task == ours.task
    assert run_config_of(tmp_path / "other") is None  # not the run's student folder
    (tmp_path / "config.yaml").write_text(
        dump_config(ours).replace("learning_rate", "lerning_rate")
    )
    with pytest.raises(ConfigError, match=r"(?s)config\.yaml.*did you mean 'learning_rate'"):
        run_config_of(student)
