"""Convert-then-distill's first step: a BERT/RoBERTa encoder converted to each efficient
attention gives the source's outputs on short inputs, with extended positions, and loads with
plain ``from_pretrained``."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
import typer
from typer.testing import CliRunner

import kdformer
import kdformer.attention  # noqa: F401  (registers local + global attention)
from kdformer.attention import IMPLEMENTATION
from kdformer.cli import app
from kdformer.config.base import ConfigError
from kdformer.config.convert import CONVERT_TARGETS, ConvertConfig
from kdformer.conversion import CONVERSIONS, TARGETS, convert, convert_checkpoint, position_offset
from kdformer.families import family_of
from kdformer.families.bert import BERT, ROBERTA
from kdformer.families.longformer import LONGFORMER
from kdformer.families.nystromformer import NYSTROMFORMER
from kdformer.models import resolve_name

runner = CliRunner()

SHAPE = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip


def source(kind: str):
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(**SHAPE, max_position_embeddings=24)
        return transformers.BertModel(config).eval()
    config = transformers.RobertaConfig(**SHAPE, max_position_embeddings=26, pad_token_id=1)
    return transformers.RobertaModel(config).eval()


def inputs(length: int, pad_id: int, pad: int = 3):
    ids = torch.randint(5, 100, (2, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, -pad:] = 0
    ids[1, -pad:] = pad_id
    return {"input_ids": ids, "attention_mask": mask}


OPTIONS = {
    "longformer": {"window": 32},
    "bigbird": {"block_size": 4, "num_random_blocks": 2},  # 16 tokens: library runs full
    "nystromformer": {"num_landmarks": 16, "conv_kernel_size": 3},  # one landmark per token
    "local_global": {"block_size": 8, "global_tokens": 1},  # 16 tokens: two blocks
}
MAX = {"longformer": 64, "bigbird": 64, "nystromformer": 16, "local_global": 64}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("target", list(OPTIONS))
def test_converted_model_gives_the_source_outputs_on_short_inputs(kind, target):
    model = source(kind)
    converted = convert(model, target, MAX[target], **OPTIONS[target]).eval()
    batch = inputs(16, model.config.pad_token_id)
    if kind == "bert":
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        got = converted(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-4)


def test_positions_are_extended_by_repeating_the_learned_ones():
    model = source("roberta")  # offset 2 (padding index 1 + 1), 24 learned positions
    converted = convert(model, "longformer", 64, window=32)
    table = converted.embeddings.position_embeddings.weight
    original = model.embeddings.position_embeddings.weight
    assert table.shape[0] == 64 + 2
    assert position_offset(converted.config) == 2
    torch.testing.assert_close(table[2 + 30], original[2 + 30 % 24])
    torch.testing.assert_close(table[2:26], original[2:26])
    bert = source("bert")  # offset 0 -> Nyströmformer's offset 2
    nystrom = transformers.NystromformerConfig()
    table = NYSTROMFORMER.extend_positions(
        bert.embeddings.position_embeddings.weight, 0, nystrom, 52
    )
    torch.testing.assert_close(table[2 + 25], bert.embeddings.position_embeddings.weight[1])


@pytest.mark.parametrize("target", list(OPTIONS))
def test_checkpoint_conversion_loads_with_plain_from_pretrained(tmp_path, target):
    src = tmp_path / "src"
    model = source("bert")
    model.save_pretrained(src)
    transformers.AutoTokenizer.from_pretrained(resolve_name("minilm-l6")).save_pretrained(src)
    out = convert_checkpoint(src, target, tmp_path / "out", MAX[target], **OPTIONS[target])
    extra = {"attn_implementation": IMPLEMENTATION} if target == "local_global" else {}
    loaded = transformers.AutoModel.from_pretrained(out, **extra)
    expected = {"longformer": "LongformerModel", "bigbird": "BigBirdModel",
                "nystromformer": "NystromformerModel", "local_global": "BertModel"}  # fmt: skip
    assert type(loaded).__name__ == expected[target]
    assert transformers.AutoTokenizer.from_pretrained(out).model_max_length == MAX[target]


def test_unsupported_sources_and_bad_settings_are_refused():
    distil = transformers.DistilBertModel(
        transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    )
    with pytest.raises(ConfigError, match="BERT/RoBERTa sources.*'distilbert'"):
        convert(distil, "longformer", 64)
    with pytest.raises(ConfigError, match="positive even number"):
        convert(source("bert"), "longformer", 64, window=7)
    with pytest.raises(ConfigError, match="must divide the input length 60"):
        convert(source("bert"), "nystromformer", 60, num_landmarks=16)
    with pytest.raises(ConfigError, match="unknown conversion target 'reformer'"):
        convert(source("bert"), "reformer", 64)  # type: ignore[arg-type]


# ---- one registration per target -------------------------------------------------------------


def cli_options() -> dict[str, Any]:
    command = typer.main.get_command(app).commands["convert"]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


def test_targets_are_the_same_set_in_the_config_the_cli_and_the_implementations():
    names = list(CONVERT_TARGETS)
    assert list(typing.get_args(ConvertConfig.model_fields["to"].annotation)) == names
    assert list(CONVERSIONS) == names
    assert tuple(names) == TARGETS
    command = ["convert", "no-such-model", "-o", "unused", "--to"]
    for name in names:  # past the CLI's choice, to the (offline) model lookup
        result = runner.invoke(app, [*command, name])
        assert result.exit_code == 2 and "could not load model" in result.output, name
    result = runner.invoke(app, [*command, "reformer"])
    assert result.exit_code == 2 and "Invalid value for '--to'" in result.output
    listed = " ".join(result.output.replace("│", " ").split())
    assert ", ".join(f"'{name}'" for name in names) in listed


def test_each_target_takes_exactly_the_options_its_registration_names():
    """An implementation's keyword-only options, its registry entry's options and the
    ``convert:`` fields agree, and every option field is some target's."""
    fields = set(ConvertConfig.model_fields) - {"to", "max_length"}
    for name, entry in CONVERT_TARGETS.items():
        parameters = inspect.signature(CONVERSIONS[name].make_config).parameters.values()
        keyword = {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
        assert keyword == set(entry.options), name
        assert set(entry.options) <= fields, name
        assert ConvertConfig(to=name).options().keys() == entry.options.keys()
    assert fields == {option for entry in CONVERT_TARGETS.values() for option in entry.options}


def test_cli_options_and_docs_come_from_the_config_fields():
    options = cli_options()
    assert set(options) == {"source", "output", *ConvertConfig.model_fields}
    for name, field in ConvertConfig.model_fields.items():
        assert options[name].help == field.description, name
        if not field.is_required():
            assert options[name].default == field.default, name
    block_size = ConvertConfig.model_fields["block_size"].description
    assert block_size == "bigbird: block size; local_global: tokens per block."
    for name, entry in CONVERT_TARGETS.items():
        assert f"{name}: {entry.summary}" in ConvertConfig.model_fields["to"].description


def test_the_cli_refuses_bad_options_before_converting(tmp_path):
    source("bert").config.save_pretrained(tmp_path / "src")  # a config is all the checks read
    base = ["convert", str(tmp_path / "src"), "-o", str(tmp_path / "out")]
    result = runner.invoke(app, [*base, "--to", "longformer", "--window", "7"])
    assert result.exit_code == 2 and "positive even number" in result.output
    result = runner.invoke(app, [*base, "--to", "bigbird", "--block-size", "0"])
    assert result.exit_code == 2 and "block_size: Input should be greater than 0" in result.output
    assert not (tmp_path / "out").exists()


def test_options_are_checked_and_completed_by_the_config_section():
    with pytest.raises(ConfigError, match="num_landmarks: Input should be greater than 0"):
        convert(source("bert"), "nystromformer", 64, num_landmarks=0)
    with pytest.raises(ConfigError, match="unknown key 'windows'"):
        convert(source("bert"), "longformer", 64, windows=32)
    converted = convert(source("bert"), "longformer", 1024)  # the section's default window
    assert converted.config.attention_window == [ConvertConfig.model_fields["window"].default] * 2


TARGET_MODULE = """
from kdformer.conversion.full import FullConversion


class PaddedConversion(FullConversion):
    def make_config(self, source, max_length, *, global_tokens):
        config = super().make_config(source, max_length)
        config.kdformer_padded = global_tokens
        return config
"""


@pytest.mark.slow
def test_a_new_target_is_its_module_plus_one_registry_entry(tmp_path):
    """A copy of kdformer with one more target (a module and a registry line, nothing else)
    offers it in the config, the CLI and the conversions."""
    package = tmp_path / "kdformer"
    shutil.copytree(
        Path(kdformer.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    (package / "conversion" / "padded.py").write_text(TARGET_MODULE)
    registry = package / "config" / "convert.py"
    entry = (
        '    "padded": ConvertTarget("full attention, padded", {"global_tokens": "pads"}, '
        '"kdformer.conversion.padded:PaddedConversion"),\n}\n'
    )
    text = registry.read_text()
    assert "\n}\n" in text  # the end of CONVERT_TARGETS
    registry.write_text(text.replace("\n}\n", "\n" + entry, 1))
    script = """
import transformers
from typer.testing import CliRunner

from kdformer.cli import app
from kdformer.config import ConvertConfig
from kdformer.conversion import CONVERSIONS, target_config

cli = CliRunner().invoke(app, ["convert", "no-such-model", "-o", "x", "--to", "padded"])
assert "could not load model" in cli.output, cli.output
assert "padded: pads" in ConvertConfig.model_fields["global_tokens"].description
config = ConvertConfig(to="padded", global_tokens=3)
assert config.options() == {"global_tokens": 3}
assert type(CONVERSIONS["padded"]).__name__ == "PaddedConversion"
made = target_config(transformers.BertConfig(), "padded", 1024, **config.options())
assert made.kdformer_padded == 3 and made.max_position_embeddings == 1024
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ---- the families' conversion rules --------------------------------------------------------


def test_families_say_how_many_positions_a_length_needs():
    """``max_position_embeddings`` for inputs of 100 tokens: the rows before the first
    position count (RoBERTa, Longformer: padding index + 1), except for Nyströmformer, whose
    table adds its two rows itself."""
    roberta = transformers.RobertaConfig(pad_token_id=1)
    longformer = transformers.LongformerConfig(pad_token_id=1)
    assert BERT.max_position_embeddings(transformers.BertConfig(), 100) == 100
    assert ROBERTA.max_position_embeddings(roberta, 100) == 102
    assert LONGFORMER.max_position_embeddings(longformer, 100) == 102
    nystrom = transformers.NystromformerConfig(hidden_size=8, num_attention_heads=2)
    nystrom.max_position_embeddings = NYSTROMFORMER.max_position_embeddings(nystrom, 100)
    embeddings = transformers.NystromformerModel(nystrom).embeddings
    assert embeddings.position_embeddings.weight.shape[0] == 100 + 2
    assert embeddings.position_ids[0, -1] == 100 + 1  # 100 tokens fit


@pytest.mark.parametrize("target", list(OPTIONS))
def test_converted_models_take_max_length_tokens(target):
    converted = convert(source("roberta"), target, MAX[target], **OPTIONS[target])
    offset = position_offset(converted.config)
    rows = converted.embeddings.position_embeddings.weight.shape[0]
    assert rows - offset >= MAX[target]
    assert family_of(converted).max_position_embeddings(converted.config, MAX[target]) == (
        converted.config.max_position_embeddings
    )


def test_extended_positions_keep_the_rows_before_the_first_position():
    table = torch.arange(10.0).unsqueeze(1)  # RoBERTa-like: rows 0-1 before position 0
    roberta = transformers.RobertaConfig(pad_token_id=1)
    extended = ROBERTA.extend_positions(table, 2, roberta, 14)
    assert extended[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]
    to_bert = BERT.extend_positions(table, 2, transformers.BertConfig(), 10)
    assert to_bert[:, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 2, 3]


def test_nystromformer_convolution_starts_at_zero_with_the_kernel_asked_for():
    converted = convert(source("bert"), "nystromformer", 16, num_landmarks=16, conv_kernel_size=5)
    conv = converted.encoder.layer[0].attention.self.conv
    assert conv.kernel_size == (5, 1) and not conv.weight.any()
    assert (
        NYSTROMFORMER.converted_weight_source("encoder.layer.0.attention.self.conv.weight") is None
    )


def test_longformer_global_projections_start_from_the_local_ones():
    model = source("roberta")
    converted = convert(model, "longformer", 64, window=32)
    for layer, original in zip(converted.encoder.layer, model.encoder.layer):
        attention = layer.attention.self
        for name in ("query", "key", "value"):
            local = getattr(original.attention.self, name)
            torch.testing.assert_close(getattr(attention, f"{name}_global").weight, local.weight)
            torch.testing.assert_close(getattr(attention, f"{name}_global").bias, local.bias)
    key = "encoder.layer.0.attention.self.value_global.bias"
    assert LONGFORMER.converted_weight_source(key) == "encoder.layer.0.attention.self.value.bias"


# ---- bad input (issue 19) ------------------------------------------------------------------


def test_convert_refuses_another_tools_folder_and_an_output_that_is_a_file(tmp_path):
    foreign = tmp_path / "other-tool"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"hidden_size": 32, "framework": "other"}')
    result = runner.invoke(
        app, ["convert", str(foreign), "-o", str(tmp_path / "a"), "--to", "full"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert f"'{foreign}' is not a transformers model: its config.json has no model_type" in text
    assert "Give a folder saved with transformers' save_pretrained" in text
    (foreign / "config.json").write_text('{"model_type": "zorblax"}')
    result = runner.invoke(
        app, ["convert", str(foreign), "-o", str(tmp_path / "a"), "--to", "full"]
    )
    assert result.exit_code == 2 and "is a 'zorblax' model, which transformers" in result.output
    (foreign / "config.json").write_text("hidden_size: 32")  # YAML, not JSON
    result = runner.invoke(
        app, ["convert", str(foreign), "-o", str(tmp_path / "a"), "--to", "full"]
    )
    assert result.exit_code == 2 and "config.json of" in result.output
    assert "is not valid JSON" in result.output and "not a local folder" not in result.output

    source("bert").config.save_pretrained(tmp_path / "src")  # a config is all the checks read
    taken = tmp_path / "taken"
    taken.write_text("a file of the user's")
    for out, said in ((taken, "it is a file"), (taken / "below", f"it lies below {taken}")):
        result = runner.invoke(
            app, ["convert", str(tmp_path / "src"), "-o", str(out), "--to", "full"]
        )
        assert result.exit_code == 2 and "Traceback" not in result.output
        text = " ".join(result.output.split())
        assert f"cannot write the converted model to {out}: {said}" in text
        assert "Choose another output folder" in text
    assert taken.read_text() == "a file of the user's"


def test_convert_warns_when_max_length_drops_source_positions(tmp_path):
    from conftest import save_tiny_glue_teacher

    src = save_tiny_glue_teacher(tmp_path / "src")  # 128 positions
    result = runner.invoke(
        app,
        ["convert", str(src), "-o", str(tmp_path / "short"), "--to", "full", "--max-length", "64"],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"warning: --max-length 64 is below the 128 positions of {src}" in text
    assert "Give --max-length 128 or more to keep them all" in text
    assert transformers.AutoConfig.from_pretrained(tmp_path / "short").max_position_embeddings == 64
    result = runner.invoke(
        app,
        ["convert", str(src), "-o", str(tmp_path / "long"), "--to", "full", "--max-length", "256"],
    )
    assert result.exit_code == 0 and "warning" not in result.output


SIZES = [  # every size option of the convert: section, at 0 (where 0 is refused) and -1
    (name, value, "greater than 0" if hasattr(bound, "gt") else "greater than or equal to 0")
    for name, field in ConvertConfig.model_fields.items()
    for bound in field.metadata
    for value in ((0, -1) if hasattr(bound, "gt") else (-1,))
]


@pytest.mark.parametrize(("name", "value", "bound"), SIZES, ids=[f"{n}={v}" for n, v, _ in SIZES])
def test_zero_or_negative_sizes_are_refused_by_the_cli_and_the_convert_section(
    tmp_path, name, value, bound
):
    """Every option, for a target that reads it: a zero block size once saved a model whose
    first forward divided by zero."""
    from kdformer.config import load_config

    target = next((t for t, entry in CONVERT_TARGETS.items() if name in entry.options), "full")
    flag = "--" + name.replace("_", "-")
    source("bert").config.save_pretrained(tmp_path / "src")
    result = runner.invoke(
        app,
        ["convert", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--to", target, flag,
         str(value)],
    )  # fmt: skip
    assert result.exit_code == 2 and f"{name}: Input should be {bound}" in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=f"convert.{name}: Input should be {bound}"):
        load_config(None, [f"convert={{to: {target}, {name}: {value}}}"])


@pytest.mark.parametrize(
    ("option", "said"),
    [("window: 2", "at least 4 (a window of 2 fails at the first forward)"),
     ("conv_kernel_size: 4", "conv_kernel_size must be odd")],
    ids=["window=2", "conv_kernel_size=4"],
)  # fmt: skip
def test_sizes_that_fail_at_the_first_forward_are_refused_before_converting(tmp_path, option, said):
    from kdformer import pipeline
    from kdformer.config import load_config

    target = "longformer" if option.startswith("window") else "nystromformer"
    source("bert").config.save_pretrained(tmp_path / "src")
    name, value = option.split(": ")
    result = runner.invoke(
        app,
        ["convert", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--to", target,
         "--" + name.replace("_", "-"), value, "--max-length", "64"],
    )  # fmt: skip
    assert result.exit_code == 2 and said in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
    config = load_config(
        "configs/demo.yaml",
        [f"output_dir={tmp_path / 'run'}", f"teacher.name={tmp_path / 'src'}",
         f"convert={{to: {target}, max_length: 64, {option}}}"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        pipeline.validate(config, ["finetune", "distill", "evaluate"])
