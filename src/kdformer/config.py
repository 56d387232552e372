"""Validated configuration: the single source of truth for YAML files, CLI overrides and Python.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key fails at load time
with the closest valid key suggested (see :func:`load_config`). The same objects are what the
Python API takes, so ``ExperimentConfig.model_validate(yaml.safe_load(f))`` equals the CLI's view.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from kdformer.configbase import ConfigError, Section
from kdformer.knowledge import HiddenConfig, KnowledgeConfig, LogitsConfig, QKVRelationsConfig
from kdformer.tasks import (
    TASK_CONFIGS,
    ClassificationTaskConfig,
    TaskConfig,
    TextTaskConfig,
    task_type,
)

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "GeneralConfig",
    "Section",
    "TaskConfig",
    "dump_config",
    "load_config",
]


class ModelConfig(Section):
    """A model to load with `transformers` `from_pretrained`."""

    name: str = Field(
        ...,
        description="Short name (see `kdformer models`), hub name (e.g. bert-base-uncased) or a "
        "local directory.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(
        False, description="Allow code from the model repository to run. Off unless you trust it."
    )


class ExtraTeacherConfig(ModelConfig):
    """One more task-trained teacher (several-teacher distillation)."""

    id: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The name knowledge terms use in `teacher:` (not main, all or each).",
    )
    weight: float = Field(
        1.0, gt=0, description="Its weight in the soft-label mix (the main teacher's: "
        "distill.teacher_weight).",
    )  # fmt: skip


class TrainConfig(Section):
    """Optimisation settings, mapped onto `transformers.TrainingArguments`."""

    epochs: float = Field(
        3.0, gt=0, description="Passes over the training set (if max_steps unset)."
    )
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimiser steps.")
    batch_size: int = Field(32, gt=0, description="Examples per device per step.")
    eval_batch_size: int = Field(128, gt=0, description="Examples per device per evaluation step.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Steps to accumulate per update.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of steps for LR warm-up.")
    lr_scheduler: str = Field("linear", description="transformers scheduler name.")

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        from transformers.trainer_utils import SchedulerType

        valid = [s.value for s in SchedulerType]
        if value not in valid:
            close = difflib.get_close_matches(value, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown scheduler '{value}'{hint}; valid: {', '.join(valid)}")
        return value

    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    memory_check: bool = Field(
        True,
        description="Print a memory estimate before training (weights, gradients, AdamW, "
        "activations, teachers) and stop when it is over what the device has free.",
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no", description="Mixed precision (fp16/bf16 need a GPU; bf16 also works on CPU)."
    )
    logging_steps: int = Field(10, gt=0, description="Log losses every this many steps.")
    eval_steps: int | None = Field(
        None, gt=0, description="Evaluate on the eval set every this many steps (unset: at end)."
    )
    save_steps: int = Field(500, gt=0, description="Write a resumable checkpoint every N steps.")
    save_total_limit: int = Field(2, gt=0, description="Checkpoints to keep.")
    dataloader_num_workers: int = Field(0, ge=0, description="Data-loading worker processes.")
    report_to: list[str] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Loggers (tensorboard, wandb, ...; [] for none).",
    )
    use_cpu: bool = Field(False, description="Train on the CPU even if an accelerator is present.")


class StudentConfig(Section):
    """How the student is shaped and initialised."""

    preset: str | None = Field(
        None,
        description="Named shape: tiny, mini, small, medium, base (BERT miniatures); "
        "half/third/quarter (teacher's width, depth divided by 2/3/4); "
        "half-width/third-width/quarter-width (teacher's depth and head size, hidden size, heads "
        "and intermediate size divided by 2/3/4). Explicit fields below override it. "
        "`kdformer students` lists shapes at a parameter budget.",
    )
    num_layers: int | None = Field(None, gt=0, description="Transformer layers.")
    hidden_size: int | None = Field(None, gt=0, description="Hidden width.")
    num_heads: int | None = Field(
        None,
        gt=0,
        description="Attention heads. With init=pruned, unset means hidden_size / the teacher's "
        "head size (pruning keeps whole heads, so hidden_size = num_heads x head size).",
    )
    intermediate_size: int | None = Field(None, gt=0, description="Feed-forward width.")
    init: Literal["teacher", "random", "pruned", "pretrained"] = Field(
        "teacher",
        description="teacher: copy embeddings, task head and the `init_layers` teacher layers "
        "(same width); random; pruned: the `init_layers` teacher layers narrowed to the most "
        "important heads and FFN neurons (per layer) and hidden dimensions (global), importance "
        "from the teacher's task-loss gradients on `pruning_batches` training batches (Michel et "
        "al. 2019; first-order Taylor for hidden dimensions), BERT-style encoders only; "
        "pretrained: load `pretrained` (its shape wins).",
    )
    init_layers: Literal["uniform", "first", "last"] | list[int] = Field(
        "uniform",
        description="Teacher layers copied when init=teacher or pruned: uniform (every k-th from "
        "0, as DistilBERT), first, last, or an explicit list of 0-based teacher layer indices.",
    )
    pruning_batches: int = Field(
        8,
        gt=0,
        description="init=pruned: training batches (of distill.train.batch_size examples, "
        "seeded shuffle) whose task-loss gradients score importance.",
    )
    pretrained: str | None = Field(
        None,
        description="Model to start from when init=pretrained: a folder (e.g. a general or "
        "task student kdformer wrote, its <output_dir>/student), a short name or a hub name. It "
        "must share the teacher's tokenizer; a task head of another size is re-initialised.",
    )


def default_cache_dir() -> Path:
    """``$KDFORMER_CACHE_DIR``, else ``~/.cache/kdformer/teacher-outputs``: one place, so every
    run, study and review of a teacher on the same data shares its entry."""
    import os

    return Path(os.environ.get("KDFORMER_CACHE_DIR") or "~/.cache/kdformer/teacher-outputs")


class TeacherCacheConfig(Section):
    """Offline distillation: the teacher's outputs computed once and read back every epoch."""

    enabled: bool = Field(
        False,
        description="Run the teacher once over the training data, store what the objective "
        "reads (safetensors shards, memory-mapped) and read it back in every epoch, run and "
        "study arm. Entries are keyed by the teacher's weights, the tokenizer, the data, "
        "max_length and the stored items: a change is a new entry, never a stale one.",
    )
    dir: Path | None = Field(
        None,
        description="Cache root (default: $KDFORMER_CACHE_DIR or ~/.cache/kdformer/"
        "teacher-outputs, shared by all runs).",
    )
    dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16", description="Storage dtype of the cached tensors (read back as float32)."
    )
    topk: int | None = Field(
        None,
        gt=0,
        description="Keep only the k largest logits per row (the rest read back as far below "
        "them: probability 0). For large output layers such as a masked LM's vocabulary; "
        "needs the kl logits loss.",
    )
    max_gb: float = Field(
        20.0, gt=0, description="The most one cache entry may grow to; checked before writing."
    )

    @field_validator("dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def root(self) -> Path:
        return (self.dir or default_cache_dir()).expanduser()


class DistillConfig(Section):
    """What knowledge moves from teacher to student, and how the student is trained."""

    knowledge: list[KnowledgeConfig] = Field(
        default_factory=lambda: [LogitsConfig()],
        description="Loss terms, each `{type: NAME, weight: W, ...}`; see `kdformer knowledge`.",
    )
    hard_label_weight: float = Field(
        0.5, ge=0, description="Weight of the ordinary task loss on gold labels (0: pure KD)."
    )
    hard_label_weight_end: float | None = Field(
        None,
        ge=0,
        description="If set, the hard-label weight moves linearly from hard_label_weight to this "
        "over training (optimiser step / total steps).",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation settings.")
    teachers: list[ExtraTeacherConfig] = Field(
        default_factory=list,
        description="More task-trained teachers beside `teacher` (which shapes and initialises "
        "the student), each `{id: ID, name: MODEL, weight: W}`; they must share its tokenizer. "
        "Soft labels mix all teachers; a knowledge term's `teacher:` picks another source.",
    )
    teacher_weight: float = Field(
        1.0, gt=0, description="The main teacher's weight in the soft-label mix."
    )
    teacher_weighting: Literal["fixed", "confidence"] = Field(
        "fixed",
        description="fixed: the teachers' weights; confidence: also each teacher's top "
        "probability on each example (or token), renormalised per example.",
    )
    cache: TeacherCacheConfig = Field(
        default_factory=TeacherCacheConfig,
        description="Teacher-output cache (offline distillation); `cache: true` turns it on.",
    )
    allow_weak_teacher: bool = Field(
        False,
        description="Distil even when the teacher does not beat the task's trivial baseline by "
        "report.min_teacher_gain (the report then marks retention as meaningless). CLI: "
        "--allow-weak-teacher.",
    )

    @field_validator("teachers")
    @classmethod
    def _unique_ids(cls, value: list[ExtraTeacherConfig]) -> list[ExtraTeacherConfig]:
        ids = [t.id for t in value]
        reserved = sorted({"main", "all", "each"} & set(ids))
        if reserved:
            raise ValueError(f"teacher ids {reserved} are reserved; name them otherwise")
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"teacher ids must be unique; repeated: {repeated}")
        return value

    def teacher_weights(self) -> dict[str, float]:
        """Every teacher's soft-label weight by id (the main one is ``main``)."""
        return {"main": self.teacher_weight, **{t.id: t.weight for t in self.teachers}}

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class GeneralConfig(DistillConfig):
    """Stage one of two-stage distillation: task-agnostic distillation on raw text from the
    teacher *before* task fine-tuning, whose student then starts the task stage. The
    distillation fields are those of `distill:`, with defaults for raw text."""

    task: TextTaskConfig = Field(..., description="The raw text (a `type: text` task section).")
    knowledge: list[KnowledgeConfig] = Field(
        default_factory=lambda: [HiddenConfig(), QKVRelationsConfig()],
        description="Loss terms of the general stage (with an MLM teacher add {type: logits}).",
    )
    hard_label_weight: float = Field(
        1.0, ge=0, description="Weight of the MLM loss when the teacher has an MLM head."
    )
    compare_one_stage: bool = Field(
        True,
        description="Also distil a student on the task alone, initialised as `student:` says "
        "(init: teacher, the default, copies teacher layers), with as many training tokens as "
        "both stages together, and report it beside the two-stage student.",
    )


class ReportConfig(Section):
    """How models are measured for the cost/quality report."""

    latency_batch_size: int = Field(32, gt=0, description="Batch size for latency timing.")
    latency_seq_length: int = Field(128, gt=0, description="Sequence length for latency timing.")
    latency_repeats: int = Field(20, gt=0, description="Timed forward passes (median reported).")
    latency_warmup: int = Field(3, ge=0, description="Untimed warm-up passes.")
    device: str = Field("auto", description="Where to evaluate and time: auto, cpu, cuda, cuda:1.")
    memory: bool = Field(
        True,
        description="Measure each saved model's peak resident memory of serving (weights + one "
        "forward of the latency batch) in a fresh process on the CPU (Linux; a few seconds per "
        "model).",
    )

    @field_validator("device")
    @classmethod
    def _available_device(cls, value: str) -> str:
        from kdformer.report.measure import resolve_device

        resolve_device(value)  # raises a ConfigError naming the problem
        return value

    min_teacher_gain: float = Field(
        0.1,
        ge=0,
        le=1,
        description="The share of the headroom between the task's trivial baseline and a "
        "perfect score that the teacher must close for retention to mean anything (0.1: a "
        "teacher at 50.9% accuracy over a 50.9% majority class must reach 55.8%). Below it, "
        "distillation stops before training (unless distill.allow_weak_teacher) and reports "
        "mark retention as meaningless.",
    )


class ConvertConfig(Section):
    """Convert the teacher to efficient attention before fine-tuning (convert-then-distill)."""

    to: Literal["full", "longformer", "bigbird", "nystromformer", "local_global"] = Field(
        ...,
        description="Efficient attention to convert the full-attention teacher to (full: keep "
        "full attention, extend the positions only).",
    )
    max_length: int = Field(4096, gt=0, description="Positions of the converted teacher.")
    window: int = Field(512, gt=0, description="longformer: attention window (even).")
    block_size: int = Field(
        64, gt=0, description="bigbird: block size; local_global: tokens per block."
    )
    num_random_blocks: int = Field(3, ge=0, description="bigbird: random blocks per query block.")
    num_landmarks: int = Field(64, gt=0, description="nystromformer: landmarks.")
    segment_length: int | None = Field(
        None,
        gt=0,
        description="nystromformer: the one input length it trains on (inputs are padded to "
        "it; task.max_length must fit). Unset: max_length.",
    )
    global_tokens: int = Field(1, ge=0, description="local_global: leading global tokens.")

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`kdformer.conversion.convert` for this target."""
        return {
            "longformer": {"window": self.window},
            "bigbird": {"block_size": self.block_size, "num_random_blocks": self.num_random_blocks},
            "nystromformer": {
                "num_landmarks": self.num_landmarks,
                "segment_length": self.segment_length,
            },
            "local_global": {"block_size": self.block_size, "global_tokens": self.global_tokens},
            "full": {},
        }[self.to]


class ExportConfig(Section):
    """Export the student to ONNX once it is distilled (``kdformer export`` does it later)."""

    enabled: bool = Field(False, description="Write <student>/onnx before the report.")
    quantize: bool = Field(True, description="Also write int8 dynamic quantisation.")
    opset: int = Field(18, ge=14, description="ONNX opset.")
    atol: float = Field(
        1e-4, gt=0, description="Largest output difference from PyTorch the export may have."
    )


class ExperimentConfig(Section):
    """One distillation experiment: optional teacher fine-tuning, distillation, evaluation."""

    output_dir: Path = Field(Path("runs/experiment"), description="Where everything is written.")
    seed: int = Field(42, description="Random seed for data sampling, initialisation and training.")
    task: TaskConfig = Field(
        default_factory=ClassificationTaskConfig,
        description="Task and data: a section of one task type (classification, ner, qa, text; "
        "see `kdformer config fields task`).",
    )
    teacher: ModelConfig = Field(
        default_factory=lambda: ModelConfig(name="minilm-l6"), description="The teacher."
    )
    convert: ConvertConfig | None = Field(
        None,
        description="Convert the full-attention teacher to efficient attention first (into "
        "<output_dir>/converted; needs finetune: the converted model has no task head). Unset: "
        "the teacher is used as it is.",
    )
    finetune: TrainConfig | None = Field(
        None,
        description="Fine-tune the teacher on the task first (into <output_dir>/teacher). Unset: "
        "the teacher is already trained for the task.",
    )
    general: GeneralConfig | None = Field(
        None,
        description="Two-stage distillation: first distil a general student on raw text (from "
        "the teacher before fine-tuning), then distil the task into it. Unset: one stage.",
    )
    student: StudentConfig = Field(default_factory=StudentConfig, description="Student shape/init.")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Distillation.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Measurement.")
    export: ExportConfig = Field(
        default_factory=ExportConfig,
        description="ONNX export of the student before the report (`export: true`); its rows "
        "join the report when it runs on the CPU.",
    )

    @field_validator("export", mode="before")
    @classmethod
    def _export_shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("output_dir")
    @classmethod
    def _not_root(cls, value: Path) -> Path:
        if str(value) in {"", "/", "."}:
            raise ValueError("output_dir must name a folder of its own, e.g. runs/sst2")
        return value


# --------------------------------------------------------------------------------------------
# Loading, overrides and friendly errors
# --------------------------------------------------------------------------------------------


def _section_class(annotation: Any, data: Any = None) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``TrainConfig | None``; for a tagged
    union (the task section) the member ``data`` selects, by its ``type`` or ``name``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, typing.Annotated):
        members = [_section_class(arg) for arg in typing.get_args(annotation)]
        members = [m for m in members if m is not None]
        tagged = [m for m in members if m in TASK_CONFIGS.values()]
        if tagged and isinstance(data, dict):
            return TASK_CONFIGS.get(task_type(data), tagged[0])
        return members[0] if members else None
    return None


def _knowledge_class(type_name: str) -> type[BaseModel] | None:
    """The config class of a union tag: a knowledge type or a task type."""
    from kdformer.knowledge import KNOWLEDGE

    entry = KNOWLEDGE.get(type_name)
    if entry is not None:
        return entry.config_class
    return TASK_CONFIGS.get(type_name)


def _other_task_owner(key: str, current: type[BaseModel] | None) -> str | None:
    """The task type whose section has ``key``, when ``current`` (a task section) lacks it."""
    if current not in TASK_CONFIGS.values():
        return None
    for kind, cls in TASK_CONFIGS.items():
        if cls is not current and key in cls.model_fields:
            return kind
    return None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk a pydantic error location down to the model class that owns its last key."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        if part in model.model_fields:
            model = _section_class(model.model_fields[part].annotation)
        else:  # a discriminated-union tag such as 'logits' or 'ner'
            model = _knowledge_class(str(part))
    return model


def suggest_key(model: type[BaseModel] | None, key: str) -> str:
    """' (did you mean 'x'?)' for the valid key closest to ``key``, or the list of valid keys."""
    if model is None:
        return ""
    valid = list(model.model_fields)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid keys: {', '.join(valid)})"


def format_validation_error(error: ValidationError, root: type[BaseModel], source: str) -> str:
    """Turn a pydantic error into lines that name each bad key and how to fix it."""
    lines = [f"Invalid configuration in {source}:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in loc if not (isinstance(p, str) and _is_tag(root, loc, p)))
        if item["type"] == "extra_forbidden":
            owner = _model_at(root, loc[:-1])
            other = _other_task_owner(str(loc[-1]), owner)
            if other is not None:
                this = owner.model_fields["type"].default
                lines.append(
                    f"  - '{dotted}' is a field of task type '{other}', not of '{this}': remove "
                    f"it, or set task.type: {other}"
                )
            else:
                lines.append(f"  - unknown key '{dotted}'{suggest_key(owner, str(loc[-1]))}")
        else:
            lines.append(f"  - {dotted or '(top level)'}: {item['msg']}")
    return "\n".join(lines)


def _is_tag(root: type[BaseModel], loc: tuple[Any, ...], part: str) -> bool:
    """True when ``part`` in ``loc`` is a union tag pydantic inserted, not a user key."""
    index = loc.index(part)
    owner = _model_at(root, loc[:index])
    return owner is None or (part not in owner.model_fields and _knowledge_class(part) is not None)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a','b'], parsed value). Values are YAML: 3, 0.5, true, [1,2], null."""
    if "=" not in text:
        raise ConfigError(
            f"override '{text}' must look like key.sub=value, e.g. distill.train.epochs=1"
        )
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}' has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from exc
    return parts, value


def apply_overrides(
    data: dict[str, Any], overrides: list[str], root: type[BaseModel] = ExperimentConfig
) -> dict[str, Any]:
    """Set each ``key.sub=value`` in ``data``; unknown keys fail with the closest valid key."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        model: type[BaseModel] | None = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override '{text}': '{part}' is not an index of a {len(node)}-item list"
                    )
                index = int(part)
                item = node[index]
                if last:
                    node[index] = value
                else:
                    model = (
                        _knowledge_class(str(item.get("type", "")))
                        if isinstance(item, dict)
                        else None
                    )
                    node = item
                continue
            if model is not None and part not in model.model_fields:
                dotted = ".".join(parts[: depth + 1])
                other = _other_task_owner(part, model)
                if other is not None:
                    raise ConfigError(
                        f"override '{text}': '{dotted}' is a field of task type '{other}', not "
                        f"of '{model.model_fields['type'].default}'; set task.type={other} first"
                    )
                raise ConfigError(
                    f"override '{text}': unknown key '{dotted}'{suggest_key(model, part)}"
                )
            if last:
                node[part] = value
                break
            field = model.model_fields[part] if model is not None else None
            if not isinstance(node.get(part), (dict, list)):
                node[part] = _default_data(field)
            node = node[part]
            model = _section_class(field.annotation, node) if field is not None else None
    return data


def _default_data(field: Any) -> Any:
    """The plain-data form of a field's default, so overrides can reach inside it (e.g. the
    default knowledge list); ``{}`` where there is nothing to reach into."""
    if field is None or field.is_required():
        return {}
    default = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(default, BaseModel):
        return default.model_dump(mode="json", exclude_unset=True)
    if isinstance(default, list):
        return [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in default]
    return {}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    cls: type[BaseModel] = ExperimentConfig,
) -> Any:
    """Read a YAML file (or start from defaults), apply overrides and validate into ``cls``."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections at the top level")
        data = loaded
    data = apply_overrides(data, list(overrides or []), cls)
    if overrides:
        source += " with overrides " + " ".join(overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls, source)) from None


def dump_config(config: BaseModel) -> str:
    """YAML text of a config, loadable again by :func:`load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every documented field, recursively."""
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if _is_task_union(field.annotation):  # a tagged union: one block of rows per task type
            rows.append(
                (key, " | ".join(TASK_CONFIGS), "type classification", field.description or "")
            )
            for kind, cls in TASK_CONFIGS.items():
                rows.extend(
                    (f"{k} [{kind}]", t, d, text)
                    for k, t, d, text in describe_fields(cls, prefix=f"{key}.")
                )
            continue
        sub = _section_class(field.annotation)
        type_name = _type_name(field.annotation)
        if field.default_factory is not None:
            try:
                default = field.default_factory()  # type: ignore[call-arg]
            except TypeError:
                default = "..."
        else:
            default = field.default
        if isinstance(default, BaseModel):
            default = "(section)"
        elif isinstance(default, Path):
            default = str(default)
        shown = "required" if field.is_required() else repr(default)
        rows.append((key, type_name, shown, field.description or ""))
        if sub is not None and name != "knowledge":
            rows.extend(describe_fields(sub, prefix=f"{key}."))
    return rows


def _is_task_union(annotation: Any) -> bool:
    """Whether an annotation is the tagged union of task sections."""
    if typing.get_origin(annotation) not in (Union, types.UnionType, typing.Annotated):
        return False
    members = {_section_class(arg) for arg in typing.get_args(annotation)}
    return len(members & set(TASK_CONFIGS.values())) > 1


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("kdformer.config.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None")


def load_section_file(path: str | Path, cls: type[BaseModel], what: str) -> Any:
    """Read a YAML file holding one ``cls`` (a study, a review) and validate it, with errors
    that name the file; ``what`` lists its main keys for the not-a-mapping error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{cls.__name__.removesuffix('Config').lower()} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping ({what})")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls, str(path))) from None
