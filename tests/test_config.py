"""Config loading: YAML files, friendly errors for misspelt keys, overrides, dump, field docs."""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from kdformer.config import (
    ConfigError,
    ExperimentConfig,
    Section,
    describe_fields,
    dump_config,
    load_config,
    parse_override,
)
from kdformer.config.knowledge import HiddenConfig, LogitsConfig
from kdformer.knowledge import KNOWLEDGE


@pytest.fixture
def write_yaml(tmp_path):
    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


KNOWLEDGE_YAML = """\
distill:
  knowledge:
    - type: logits
      temperature: 4
    - type: hidden
      layers: [[1, 2], [2, 4]]
"""


def test_load_yaml_file(write_yaml):
    path = write_yaml(
        "output_dir: runs/x\nseed: 7\ntask: {name: mrpc, max_length: 64}\n"
        "student: {preset: half, init_layers: [0, 3]}\n" + KNOWLEDGE_YAML
    )
    config = load_config(path)
    assert isinstance(config, ExperimentConfig)
    assert config.output_dir == Path("runs/x") and config.seed == 7
    assert (config.task.name, config.task.max_length) == ("mrpc", 64)
    assert config.student.init_layers == [0, 3]
    logits, hidden = config.distill.knowledge
    assert isinstance(logits, LogitsConfig) and logits.temperature == 4
    assert isinstance(hidden, HiddenConfig) and hidden.layers == [(1, 2), (2, 4)]
    assert config.distill.train.learning_rate == 5e-5  # defaults fill the rest


def test_empty_file_and_no_file_give_defaults(write_yaml):
    """An empty file with overrides starts from the defaults; alone it is refused (issue 19:
    test_bad_input_runs.py)."""
    assert load_config(write_yaml(""), ["seed=42"]) == ExperimentConfig() == load_config()
    with pytest.raises(ConfigError, match="is empty"):
        load_config(write_yaml(""))


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_top_level_must_be_a_mapping(write_yaml):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write_yaml("- a\n- b\n"))


@pytest.mark.parametrize(
    "text, dotted, suggestion",
    [
        ("studnt: {}\n", "studnt", "student"),
        (
            "distill:\n  train:\n    lerning_rate: 0.1\n",
            "distill.train.lerning_rate",
            "learning_rate",
        ),
        (
            "distill:\n  knowledge:\n    - type: logits\n      temprature: 3\n",
            "distill.knowledge.0.temprature",
            "temperature",
        ),
        (
            "distill:\n  knowledge:\n    - {type: logits}\n    - {type: hidden, projecton: shared}\n",
            "distill.knowledge.1.projecton",
            "projection",
        ),
    ],
)
def test_unknown_key_names_dotted_key_and_suggests(write_yaml, text, dotted, suggestion):
    path = write_yaml(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"unknown key '{dotted}'" in message
    assert f"did you mean '{suggestion}'" in message
    assert str(path) in message


def test_unknown_key_without_close_match_lists_valid_keys(write_yaml):
    with pytest.raises(ConfigError, match="valid keys: .*max_steps"):
        load_config(write_yaml("distill:\n  train:\n    zzzzzz: 1\n"))


def test_unknown_knowledge_type_lists_valid_types(write_yaml):
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml("distill:\n  knowledge:\n    - type: hiden\n"))
    message = str(info.value)
    assert "hiden" in message
    for name in ("logits", "hidden", "attention"):
        assert name in message


def test_invalid_value_names_the_field(write_yaml):
    with pytest.raises(ConfigError, match="distill.train.batch_size"):
        load_config(write_yaml("distill:\n  train:\n    batch_size: 0\n"))


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------


def test_overrides_parse_yaml_values():
    config = load_config(
        overrides=[
            "seed=3",
            "distill.train.learning_rate=1e-3",
            "distill.train.use_cpu=true",
            "distill.train.report_to=[]",
            "student.init_layers=[0, 2]",
            "task.name=rte",
            "finetune.epochs=1",
        ]
    )
    assert config.seed == 3
    assert config.distill.train.learning_rate == 1e-3
    assert config.distill.train.use_cpu is True
    assert config.distill.train.report_to == []
    assert config.student.init_layers == [0, 2]
    assert config.task.name == "rte"
    assert config.finetune is not None and config.finetune.epochs == 1


def test_overrides_win_over_file(write_yaml):
    path = write_yaml("seed: 1\ndistill:\n  train:\n    epochs: 5\n")
    config = load_config(path, ["seed=2"])
    assert config.seed == 2 and config.distill.train.epochs == 5


def test_override_indexes_knowledge_list_from_file(write_yaml):
    config = load_config(
        write_yaml(KNOWLEDGE_YAML),
        ["distill.knowledge.0.weight=2", "distill.knowledge.1.loss=cosine"],
    )
    assert config.distill.knowledge[0].weight == 2
    assert config.distill.knowledge[1].loss == "cosine"


def test_override_indexes_default_knowledge_list():
    config = load_config(overrides=["distill.knowledge.0.weight=2"])
    assert config.distill.knowledge[0].weight == 2


def test_override_replaces_whole_knowledge_list():
    config = load_config(overrides=["distill.knowledge=[{type: hidden}, {type: attention}]"])
    assert [k.type for k in config.distill.knowledge] == ["hidden", "attention"]


def test_override_unknown_key_suggests(write_yaml):
    with pytest.raises(
        ConfigError, match=r"'distill.train.lerning_rate'.*did you mean 'learning_rate'"
    ):
        load_config(overrides=["distill.train.lerning_rate=1"])
    with pytest.raises(ConfigError, match=r"did you mean 'temperature'"):
        load_config(write_yaml(KNOWLEDGE_YAML), ["distill.knowledge.0.temprature=1"])


def test_override_list_index_out_of_range(write_yaml):
    with pytest.raises(ConfigError, match="not an index of a 2-item list"):
        load_config(write_yaml(KNOWLEDGE_YAML), ["distill.knowledge.5.weight=1"])


@pytest.mark.parametrize("text", ["seed", "distill..epochs=1", "=3", "seed=[1, 2"])
def test_bad_override_syntax(text):
    with pytest.raises(ConfigError, match="override"):
        parse_override(text)
    with pytest.raises(ConfigError):
        load_config(overrides=[text])


def test_override_with_bad_value_names_the_field():
    with pytest.raises(ConfigError, match="distill.train.epochs"):
        load_config(overrides=["distill.train.epochs=-1"])


# --------------------------------------------------------------------------------------------
# Dump and docs
# --------------------------------------------------------------------------------------------


def test_dump_round_trips(write_yaml):
    original = load_config(
        write_yaml(KNOWLEDGE_YAML),
        [
            "output_dir=runs/round",
            "finetune.max_steps=10",
            "student.init_layers=[1, 3]",
            "student.num_layers=2",
            "task.data_dir=/data/glue",
            "distill.train.mixed_precision=bf16",
        ],
    )
    assert load_config(write_yaml(dump_config(original), "dumped.yaml")) == original


def test_default_knowledge_is_a_logits_term():
    (term,) = load_config().distill.knowledge
    assert isinstance(term, LogitsConfig)


def test_dump_round_trips_defaults(write_yaml):
    default = ExperimentConfig()
    assert load_config(write_yaml(dump_config(default))) == default


def section_classes(annotation) -> list[type[BaseModel]]:
    """Section models inside an annotation such as ``TrainConfig | None``."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, Section) else []
    if typing.get_origin(annotation) is typing.Annotated:
        return section_classes(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in section_classes(arg)]
    return []


def leaf_keys(model: type[BaseModel], prefix: str = "", suffix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        sections = section_classes(field.annotation)
        if len(sections) > 1:  # the tagged union of task sections: each type's fields
            keys.add(f"{prefix}{name}")
            for section in sections:
                tag = section.model_fields["type"].default
                keys |= leaf_keys(section, f"{prefix}{name}.", f" [{tag}]")
        elif sections:
            keys |= leaf_keys(sections[0], f"{prefix}{name}.", suffix)
        else:
            keys.add(f"{prefix}{name}{suffix}")
    return keys


def test_describe_fields_documents_every_leaf_field():
    rows = {
        key: (type_name, default, text)
        for key, type_name, default, text in describe_fields(ExperimentConfig)
    }
    leaves = leaf_keys(ExperimentConfig)
    assert {
        "distill.train.learning_rate",
        "task.max_length [classification]",
        "task.doc_stride [qa]",
        "task.label_all_tokens [ner]",
        "general.task.mlm",
        "distill.knowledge",
    } <= leaves
    assert leaves <= set(rows)
    undocumented = sorted(key for key in rows if not rows[key][2].strip())
    assert undocumented == []


def test_every_knowledge_field_is_documented():
    undocumented = [
        f"{name}.{key}"
        for name, entry in KNOWLEDGE.items()
        for key, _, _, text in describe_fields(entry.config_class)
        if not text.strip()
    ]
    assert undocumented == []


# --------------------------------------------------------------------------------------------
# The task section: a tagged union of task types
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ([], "classification"),
        (["task.name=mrpc"], "classification"),
        (["task.name=classification"], "classification"),
        (["task.name=conll2003"], "ner"),
        (["task.name=squad"], "qa"),
        (["task.name=text"], "text"),
        (["task.type=ner", "task.name=litbank"], "ner"),
        (["task={type: qa, name: my-faq}"], "qa"),
    ],
)
def test_task_type_from_type_or_name(overrides, kind):
    assert load_config(None, overrides).task.type == kind


def test_overrides_reach_the_fields_of_the_files_task_type(write_yaml):
    path = write_yaml("task:\n  type: qa\n  train_file: squad.json\n")
    task = load_config(path, ["task.doc_stride=64", "task.max_length=256"]).task
    assert (task.type, task.doc_stride, task.window_stride) == ("qa", 64, 64)


def test_fields_of_another_task_type_are_named(write_yaml):
    with pytest.raises(
        ConfigError, match=r"'task.label_all_tokens' is a field of task type 'ner', not of 'qa'"
    ):
        load_config(write_yaml("task:\n  type: qa\n  label_all_tokens: true\n"))
    with pytest.raises(ConfigError, match=r"set task.type=ner first"):
        load_config(None, ["task.label_all_tokens=true"])
    with pytest.raises(
        ConfigError, match=r"unknown key 'task.doc_strid' \(did you mean 'doc_stride'"
    ):
        load_config(write_yaml("task:\n  type: qa\n  doc_strid: 3\n"))


def test_unknown_task_type_lists_the_types(write_yaml):
    with pytest.raises(
        ConfigError, match=r"unknown task type; valid: classification, ner, qa, text"
    ):
        load_config(write_yaml("task:\n  type: tagging\n"))


def test_general_section_takes_a_text_task(write_yaml):
    config = load_config(None, ["general={task: {files: corpus}}"])
    assert config.general.task.type == "text" and config.general.compare_one_stage
    assert [k.type for k in config.general.knowledge] == ["hidden", "qkv_relations"]
    with pytest.raises(ConfigError, match=r"general.task.doc_stride"):
        load_config(None, ["general={task: {files: corpus, doc_stride: 3}}"])


def test_a_key_given_twice_is_refused_naming_both_lines(write_yaml):
    text = "seed: 1\ndistill:\n  hard_label_weight: 0.3\nstudent:\n  num_layers: 2\ndistill:\n  cache: true\n"
    with pytest.raises(ConfigError, match=r"key 'distill' is given twice .*lines 2 and 6.*Merge"):
        load_config(write_yaml(text))
    nested = "distill:\n  train:\n    batch_size: 8\n    batch_size: 16\n"
    with pytest.raises(ConfigError, match=r"'batch_size' is given twice .*lines 3 and 4"):
        load_config(write_yaml(nested))


def test_a_section_switched_on_by_shorthand_keeps_its_fields_in_either_order(tmp_path):
    cache_dir = tmp_path / "cache"
    on_then_dir = load_config(None, ["distill.cache=true", f"distill.cache.dir={cache_dir}"])
    dir_then_on = load_config(None, [f"distill.cache.dir={cache_dir}", "distill.cache=true"])
    for config in (on_then_dir, dir_then_on):
        assert config.distill.cache.enabled is True and config.distill.cache.dir == cache_dir
    off = load_config(None, ["export=true", "export.opset=18", "export=false"])
    assert off.export.enabled is False and off.export.opset == 18


# --------------------------------------------------------------------------------------------
# `kdformer config fields [PREFIX]`
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [60, 80, 120, 200])
@pytest.mark.parametrize("prefix", ["", "distill.train", "task"])
def test_config_fields_prints_every_key_whole(monkeypatch, width, prefix):
    """No key is cut with an ellipsis at any terminal width: a table where the keys fit next
    to the other columns, one block per field on a narrower terminal."""
    from rich.console import Console
    from typer.testing import CliRunner

    from kdformer import cli

    monkeypatch.setattr(cli, "console", Console(width=width, no_color=True))
    result = CliRunner().invoke(cli.app, ["config", "fields", *([prefix] if prefix else [])])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    words = set(result.output.replace("│", " ").split())
    keys = [k for k, *_ in describe_fields(ExperimentConfig) if k.startswith(prefix)]
    assert keys
    for key in keys:
        assert key.split(" [")[0] in words, key
    assert max(len(line) for line in result.output.splitlines()) <= width


@pytest.mark.parametrize(
    "prefix, closest",
    [
        ("distill.trian", "distill.train"),
        ("distil.cache.enabeld", "distill.cache.enabled"),
        ("studnet", "student"),
    ],
)
def test_config_fields_of_an_unknown_prefix_fail_naming_the_closest(prefix, closest):
    from typer.testing import CliRunner

    from kdformer.cli import app

    result = CliRunner().invoke(app, ["config", "fields", prefix])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"no config field starts with '{prefix}'" in text
    assert closest in text.split("closest:", 1)[1]


def test_config_fields_of_a_prefix_unlike_any_key_list_the_sections():
    from typer.testing import CliRunner

    from kdformer.cli import app

    result = CliRunner().invoke(app, ["config", "fields", "zzz"])
    assert result.exit_code == 2
    assert "sections: output_dir, seed, task" in " ".join(result.output.split())
