"""The stages: validate (everything cheap, before any training), finetune, the general stage,
distill (and the one-stage comparison), evaluate, and run (all configured stages in order)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import transformers

from kdformer import distributed
from kdformer.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    ReportConfig,
    TrainConfig,
    dump_config,
)
from kdformer.conversion import convert_checkpoint, target_config
from kdformer.devices import resolve_device
from kdformer.distiller import Distiller
from kdformer.distributed import training_device
from kdformer.export.onnx import OnnxModel
from kdformer.families import check_models
from kdformer.models import (
    check_same_tokenizer,
    load_model,
    load_model_config,
    load_tokenizer,
    resolve_name,
)
from kdformer.objective import MAIN, DistillationObjective
from kdformer.pipeline.budget import report_and_check
from kdformer.pipeline.export import export_model, export_record, exported_models, fixed_length_of
from kdformer.pipeline.outputs import (
    Paths,
    check_output_dir,
    console,
    is_finished,
    save_atomically,
    save_model,
    start_mode,
    write_config,
    write_training_record,
)
from kdformer.pipeline.teachers import (
    check_cache_setup,
    check_teacher,
    evaluate_teacher,
    load_task_model,
    load_teacher,
    teacher_fingerprint,
    teacher_reference,
    teacher_signal,
)
from kdformer.pipeline.two_stage import (
    general_config,
    matched_steps,
    one_stage_config,
    task_stage_config,
)
from kdformer.pruning import importance_batches
from kdformer.report import (
    build_report,
    measure_loaded,
    print_report,
    write_report,
)
from kdformer.report.card import write_model_card
from kdformer.students import build_student, student_config
from kdformer.tasks import DataError, Task, TaskSection, build_task
from kdformer.training import (
    TaskTrainer,
    build_trainer,
    gathered_state_dict,
    run_training,
)

Stage = Literal["finetune", "general", "distill", "evaluate"]
STAGES: tuple[Stage, ...] = ("finetune", "general", "distill", "evaluate")


def distill_model_configs(
    config: ExperimentConfig, teacher_config: Any
) -> tuple[Any, dict[str, Any]]:
    """The configs of the models a distill stage of ``config`` trains with besides the main
    teacher: the student's (a pretrained student's own, or before the general stage has
    written it the shape it will have; else the teacher's with the student's shape) and the
    other teachers' by id."""
    student = config.student
    if student.init == "pretrained":
        if not student.pretrained:
            raise ConfigError("student.init: pretrained needs student.pretrained")
        if config.general is None or Path(student.pretrained).exists():
            student_cfg = load_model_config(student.pretrained)
        else:  # the general stage writes it
            student_cfg = student_config(
                teacher_config, student.model_copy(update={"init": "teacher"})
            )
    else:
        student_cfg = student_config(teacher_config, student)
    return student_cfg, {extra.id: load_model_config(extra) for extra in config.distill.teachers}


def distill_pad_length(
    task: Task, teacher_config: Any, student_config: Any, others: dict[str, Any]
) -> int | None:
    """The one length every batch of a distillation (and of its report) is padded to, when a
    model's family needs one (Nyströmformer's fixed length, BigBird's block-sparse minimum);
    None: each batch's own longest input. A value of the run, from its models: collators, the
    teacher cache and the evaluations get it passed. Checks each model's input rules too."""
    models = [(teacher_config, "teacher"), (student_config, "student")]
    models += [(c, f"teacher {i}") for i, c in others.items()]
    return check_models(models, task.config.max_length)


def check_distill_setup(config: ExperimentConfig, task: Task, teacher_config: Any) -> None:
    """The student's shape or starting model, and the objective, against the teacher."""
    student_cfg, others = distill_model_configs(config, teacher_config)
    pretrained = config.student.pretrained
    if config.student.init == "pretrained" and (
        config.general is None or Path(pretrained).exists()
    ):
        check_same_tokenizer(load_tokenizer(config.teacher), load_tokenizer(pretrained))
    if config.distill.teachers:
        main_tokenizer = load_tokenizer(config.teacher)
        for extra in config.distill.teachers:
            task.check_lengths(others[extra.id], extra.name)
            check_same_tokenizer(main_tokenizer, load_tokenizer(extra))
    pad_to = distill_pad_length(task, teacher_config, student_cfg, others)
    check_cache_setup(config)
    check_exportable(config, student_cfg)
    objective = build_objective(config, task, teacher_config, student_cfg, others)
    report_and_check(
        task, student_cfg, [teacher_config, *others.values()], objective,
        config.distill.train, "distill.train", pad_to or task.config.max_length,
        len(objective.needs_for("teacher").hidden_layers), config.distill.cache.enabled,
    )  # fmt: skip


def check_room_for_text(task: Task, tokenizer: Any) -> None:
    """Refuse a ``max_length`` that leaves no room for text once the tokenizer's special tokens
    ([CLS] and [SEP] around a pair of texts) are in."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    if task.config.max_length < special + 2:
        raise ConfigError(
            f"task.max_length {task.config.max_length} leaves no room for text: the tokenizer "
            f"adds {special} special tokens to a pair of texts. Set task.max_length to the "
            "length of your inputs in tokens (128 suits most sentence tasks)"
        )


def check_precision(train: TrainConfig, setting: str) -> None:
    """fp16 needs a GPU; say so before loading anything rather than at the Trainer's start."""

    if train.mixed_precision == "fp16" and training_device().type != "cuda":
        raise ConfigError(
            f"{setting}.mixed_precision: fp16 needs a CUDA GPU and this machine trains on the "
            "CPU: use bf16 (CPUs with bfloat16 support) or no"
        )


def check_exportable(config: ExperimentConfig, student_config: Any) -> None:
    """With ``export: true``, refuse before training a student that runs at one fixed length
    (exported graphs take any length)."""

    fixed = fixed_length_of(student_config) if config.export.enabled else None
    if fixed is not None:
        raise ConfigError(
            f"export: true, but the student is a {fixed[0]} model that runs at one fixed "
            f"length ({fixed[1]} tokens), and exported graphs take any length: set export: false, "
            "or distill a full-attention or local_global student"
        )


def build_objective(
    config: ExperimentConfig,
    task: Task,
    teacher_config: Any,
    student_config: Any,
    other_teachers: dict[str, Any],
) -> DistillationObjective:
    """The distillation objective a config asks for (several teachers included)."""
    return DistillationObjective(
        config.distill.knowledge,
        teacher_config,
        student_config,
        task.outputs,
        config.distill.hard_label_weight,
        hard_label_weight_end=config.distill.hard_label_weight_end,
        other_teachers=other_teachers,
        teacher_weights=config.distill.teacher_weights(),
        weighting=config.distill.teacher_weighting,
    )


def validate(config: ExperimentConfig, stages: Sequence[Stage], task: Task | None = None) -> Task:
    """Fail fast: data, labels, lengths, model shapes, knowledge terms and tokenizers, before
    training. ``task``: reuse one built from ``config.task`` and ``config.seed`` (studies share
    them)."""
    check_output_dir(config.output_dir)
    resolve_device(config.report.device)
    task = task or build_task(config.task, config.seed)
    if "finetune" in stages and config.finetune is None:
        raise ConfigError(
            "the finetune stage needs a `finetune:` section (training settings for the teacher)"
        )
    if "finetune" in stages and task.finetune_refusal:
        raise ConfigError(task.finetune_refusal)
    if "general" in stages and config.general is None:
        raise ConfigError("the general stage needs a `general:` section (raw text and training)")
    if config.convert is not None and config.finetune is None:
        raise ConfigError(
            "convert: needs a `finetune:` section too: the converted teacher has no task head "
            "(and long inputs to learn), so it is fine-tuned on the task before distilling"
        )
    teacher_config = source_teacher_config(config)
    task.adapt_to_teacher(teacher_config)
    task.check_lengths(teacher_config, config.teacher.name)
    check_room_for_text(task, load_tokenizer(config.teacher))
    if "finetune" in stages and config.finetune is not None:
        check_precision(config.finetune, "finetune")
    if "distill" in stages:
        check_precision(config.distill.train, "distill.train")
    pad_to = check_models([(teacher_config, "teacher")], task.config.max_length)
    if {"finetune", "distill"} & set(stages):
        task.load("train")
    task.load("eval")
    if "finetune" in stages and config.finetune is not None:
        report_and_check(
            task, teacher_config, [], None, config.finetune, "finetune",
            pad_to or task.config.max_length,
        )  # fmt: skip
    if "general" in stages:
        stage_one = general_config(config)
        general_task = build_task(stage_one.task, config.seed)
        general_task.adapt_to_teacher(teacher_config)
        general_task.check_lengths(teacher_config, config.teacher.name)
        check_models([(teacher_config, "teacher")], general_task.config.max_length)
        general_task.load("train")
        general_task.load("eval")
        check_distill_setup(stage_one, general_task, teacher_config)
    if "distill" in stages:
        check_distill_setup(task_stage_config(config), task, teacher_config)
        if (
            "finetune" not in stages
            and config.finetune is not None
            and not is_finished(Paths(config.output_dir).teacher)
        ):
            raise ConfigError(
                f"distill needs the fine-tuned teacher in {Paths(config.output_dir).teacher}, which "
                "does not exist yet: run `kdformer finetune` first, or `kdformer run` for both"
            )
        if (
            config.general is not None
            and "general" not in stages
            and not is_finished(Paths(config.output_dir).general / "student")
        ):
            raise ConfigError(
                f"the task stage starts from the general student in "
                f"{Paths(config.output_dir).general / 'student'}, which does not exist yet: run "
                "`kdformer run CONFIG --stages general` first, or `kdformer run` for all stages"
            )
    return task


def note_unused_length(task: Task, features: Any, pad_to: int | None = None) -> None:
    """Say so when ``max_length`` is far beyond the longest training input: harmless with
    per-batch padding, wasted compute when a model family pads every batch to one length
    (``pad_to``)."""
    limit = task.config.max_length
    longest = max((len(ids) for ids in features["input_ids"]), default=0)
    if not longest or longest * 2 > limit:
        return
    if pad_to:
        console.print(
            f"[yellow]note: every batch is padded to {pad_to} tokens, but the longest "
            f"training input has {longest}: a lower task.max_length saves most of the compute[/]"
        )
    else:
        console.print(
            f"note: task.max_length is {limit} and the longest training input has {longest} "
            "tokens; nothing is truncated, and batches pad to their own longest input"
        )


def source_teacher_config(config: ExperimentConfig) -> Any:
    """The config of the model fine-tuning starts from: the teacher, or (``convert:``) what
    converting it will give, known before any weights are converted."""
    teacher_config = load_model_config(config.teacher)
    if config.convert is None:
        return teacher_config

    convert = config.convert
    return target_config(teacher_config, convert.to, convert.max_length, **convert.options())


def teacher_source(config: ExperimentConfig) -> ModelConfig:
    """What fine-tuning loads: the teacher, or its converted copy in ``<output_dir>/converted``."""
    if config.convert is None:
        return config.teacher
    return ModelConfig(name=str(Paths(config.output_dir).converted))


def convert_teacher(config: ExperimentConfig, overwrite: bool = False) -> Path:
    """Convert the full-attention teacher into ``<output_dir>/converted`` (skipped when done)."""

    assert config.convert is not None
    paths = Paths(config.output_dir)
    if is_finished(paths.converted) and not overwrite:
        console.print(f"teacher already converted in {paths.converted}; skipping")
        return paths.converted
    convert = config.convert
    console.print(
        f"[bold]converting teacher[/] {config.teacher.name} -> {convert.to} "
        f"({convert.max_length} positions)"
    )

    def save(folder: Path) -> None:
        convert_checkpoint(
            resolve_name(config.teacher.name), convert.to, folder, convert.max_length,
            **convert.options(),
        )  # fmt: skip

    save_atomically(save, paths.converted)
    return paths.converted


def finetune(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    task: Task | None = None,
) -> Path:
    """Fine-tune ``config.teacher`` on the task into ``<output_dir>/teacher``."""
    paths = Paths(config.output_dir)
    task = task or validate(config, ["finetune"])
    assert config.finetune is not None
    mode = start_mode(paths.teacher, paths.checkpoints("teacher"), overwrite, resume)
    if mode == "skip":
        console.print(
            f"teacher already fine-tuned in {paths.teacher}; skipping (--overwrite redoes it)"
        )
        return paths.teacher
    write_config(config)
    if config.convert is not None:
        convert_teacher(config, overwrite)
    transformers.set_seed(config.seed)
    source = teacher_source(config)
    tokenizer = load_tokenizer(source)
    # A head of another task or size (a checkpoint fine-tuned elsewhere) is replaced.
    model = load_model(source, task.model_class, ignore_mismatched_sizes=True, **task.head_kwargs())
    task.align_model(model)
    pad_to = check_models([(model.config, "teacher")], task.config.max_length)
    train_features = task.tokenize(task.load("train"), tokenizer, "train")
    console.print(
        f"[bold]fine-tuning teacher[/] {source.name} on {task.describe_data()} "
        f"({len(train_features)} training inputs)"
    )
    note_unused_length(task, train_features, pad_to)
    trainer = build_trainer(
        TaskTrainer, model, config.finetune, paths.checkpoints("teacher"), config.seed, task,
        tokenizer, train_features, callbacks=callbacks, pad_to=pad_to,
    )  # fmt: skip
    run_training(
        trainer, paths.checkpoints("teacher"), mode == "resume", config.finetune, "finetune"
    )

    weights = gathered_state_dict(trainer)

    def save(folder: Path) -> None:
        save_model(model, tokenizer, config, folder, weights)
        write_training_record(trainer, folder)

    save_atomically(save, paths.teacher)
    console.print(f"teacher saved to {paths.teacher}")
    return paths.teacher


def distill(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    task: Task | None = None,
    teacher_eval: dict[str, Any] | None = None,
) -> Path:
    """Distill the task-trained teacher into a student saved in ``<output_dir>/student``.
    ``teacher_eval``: the teacher's measurement when the caller has it (studies)."""
    config = task_stage_config(config)
    paths = Paths(config.output_dir)
    task = task or validate(config, ["distill"])
    mode = start_mode(paths.student, paths.checkpoints("student"), overwrite, resume)
    if mode == "skip":
        console.print(
            f"student already distilled in {paths.student}; skipping (--overwrite redoes it)"
        )
        return paths.student
    write_config(config)
    transformers.set_seed(config.seed)
    reference = teacher_reference(config)
    teacher = load_teacher(reference, task)
    tokenizer = load_tokenizer(reference)
    pad_to = distill_pad_length(
        task, teacher.config, *distill_model_configs(config, teacher.config)
    )
    check_teacher(
        config, task, teacher_eval or evaluate_teacher(config, task, teacher, tokenizer, pad_to)
    )
    train_features = task.tokenize(task.distillation_examples(), tokenizer, "train")
    importance_data = None
    if config.student.init == "pruned":  # importance from the teacher's task loss on train data
        if not task.label_keys:
            raise ConfigError(
                "init: pruned scores importance with the task loss, and this task has no gold "
                "labels (raw text without an MLM head): use init: teacher"
            )
        importance_data = importance_batches(
            task.tokenize(task.load("train"), tokenizer, "train"),  # gold labels only
            task.collator(tokenizer, "train", pad_to),
            config.distill.train.batch_size,
            config.seed,
        )
    student = build_student(
        teacher,
        config.student,
        task.model_class,
        config.seed,
        data=importance_data,
        label_keys=task.label_keys,
    )
    if config.student.init == "pretrained":
        task.align_model(student)
    others = {}
    for extra in config.distill.teachers:
        others[extra.id] = load_teacher(extra, task)
        check_same_tokenizer(tokenizer, load_tokenizer(extra))
    objective = build_objective(
        config, task, teacher.config, student.config, {i: m.config for i, m in others.items()}
    )
    signal, train_features, collator = teacher_signal(
        config, teacher, tokenizer, task, objective.needs_for("teacher"), train_features, pad_to
    )
    signals = {MAIN: signal}
    for teacher_id, other in others.items():
        signals[teacher_id], train_features, collator = teacher_signal(
            config, other, tokenizer, task, objective.needs_of_teacher(teacher_id),
            train_features, pad_to,
        )  # fmt: skip
    terms = ", ".join(f"{n} x{t.config.weight}" for n, t in objective.terms.items())
    hard = (
        f"hard labels x{config.distill.hard_label_weight}"
        if objective.uses_hard_labels
        else "no hard labels"
    )
    console.print(
        f"[bold]distilling[/] {reference.name} ({teacher.config.num_hidden_layers} layers) -> student "
        f"({student.config.num_hidden_layers} x {student.config.hidden_size}, init {config.student.init}) "
        f"on {task.describe_data()}; knowledge: {terms or 'none'}; {hard}"
    )
    note_unused_length(task, train_features, pad_to)
    distiller = Distiller(
        student, signals if others else signal, objective, task, tokenizer, config.distill.train,
        paths.checkpoints("student"), train_features=train_features, collator=collator,
        callbacks=callbacks, seed=config.seed, pad_to=pad_to,
    )  # fmt: skip
    trainer = distiller.train(resume=mode == "resume")
    held_out = trainer.held_out_objective() if not task.outputs else None
    weights = distiller.student_weights()

    def save(folder: Path) -> None:
        save_model(student, tokenizer, config, folder, weights)
        write_training_record(trainer, folder, distiller.signal)
        if held_out is not None:
            (folder / "held_out.json").write_text(
                json.dumps(held_out, indent=2) + "\n", encoding="utf-8"
            )
        write_model_card(
            folder, dump_config(config), config.teacher.name, None, task.model_class.__name__,
            task.card_dataset(), task.pipeline_tag,
        )  # fmt: skip

    save_atomically(save, paths.student)
    console.print(f"student saved to {paths.student}")
    return paths.student


def measure_models(
    models: Sequence[tuple[str, str | Path]],
    task_config: TaskSection,
    report: ReportConfig,
    seed: int = 42,
    eval_batch_size: int = 128,
    trust_remote_code: bool = False,
    task: Task | None = None,
    known: dict[str, dict[str, float]] | None = None,
    extra: Sequence[tuple[str, Any, Any, Path]] = (),
    pad_to: int | None = None,
) -> dict[str, Any]:
    """Evaluate and time each (name, model folder or hub name) side by side on the eval set.
    ``known``: metrics already measured for some names (the teacher's, from its check);
    ``extra``: (name, model, tokenizer, path) already built (exported students); ``pad_to``:
    the run's one batch length, when its models' family needs one."""
    task = task or build_task(task_config, seed)
    if models:
        first = ModelConfig(name=str(models[0][1]), trust_remote_code=trust_remote_code)
        task.adapt_to_teacher(load_model_config(first))
    eval_raw = task.load("eval")
    loaded = []
    for name, source in models:
        reference = ModelConfig(name=str(source), trust_remote_code=trust_remote_code)
        model = load_task_model(
            reference,
            task,
            "model",
            "Its scores would be those of random weights; evaluate a model trained for this task",
        )
        path = source if Path(str(source)).is_dir() else None
        loaded.append((name, model, load_tokenizer(reference), path))
    loaded += extra
    measurements = measure_loaded(loaded, task, eval_raw, report, eval_batch_size, known, pad_to)
    try:
        baseline = task.baseline(task.load("train"), eval_raw)
    except DataError:  # an evaluation-only setup may have no training split
        baseline = None
    return build_report(
        task.name,
        task.main_metric,
        len(eval_raw),
        measurements,
        report,
        baseline=baseline,
        baseline_name=task.baseline_name,
        higher_is_better=task.higher_is_better,
        columns=list(task.table_metrics) if task.table_metrics else None,
    )


def exported_rows(
    student: Path, name: str, report: ReportConfig
) -> list[tuple[str, Any, Any, Path, dict[str, Any]]]:
    """The student's current ONNX export as report rows (name, model, tokenizer, file,
    details), when there is one and the report runs on the CPU (ONNX Runtime's device here)."""
    from transformers import AutoConfig

    files = exported_models(student)
    if not files:
        return []
    if resolve_device(report.device).type != "cpu":
        console.print(
            f"[yellow]the ONNX export in {student} runs on the CPU: its rows are measured by "
            "`kdformer export` (or with report.device=cpu)[/]"
        )
        return []
    record = export_record(student)
    config = AutoConfig.from_pretrained(str(student))
    tokenizer = load_tokenizer(str(student))
    rows = []
    for suffix, path in files:
        details = {
            "file": f"{student.name}/{path.parent.name}/{path.name}",
            "onnxruntime": record["versions"]["onnxruntime"],
            "max_abs_diff": record["max_abs_diff" if suffix == "onnx" else "int8_max_abs_diff"],
            "agreement": None if suffix == "onnx" else record.get("int8_agreement"),
        }
        model = OnnxModel(path, config, record["parameters"])
        rows.append((f"{name} ({suffix})", model, tokenizer, path, details))
    return rows


def run_pad_length(
    config: ExperimentConfig, task: Task, models: Sequence[tuple[str, str | Path]]
) -> int | None:
    """The finished run's one batch length (see :func:`distill_pad_length`), from the configs
    of its measured ``models`` (name, folder or hub name): the report evaluates them as the
    run trained them, whether it runs as the last stage or later on its own."""
    remote = config.teacher.trust_remote_code
    configs = [
        (load_model_config(ModelConfig(name=str(source), trust_remote_code=remote)), name)
        for name, source in models
    ]
    return check_models(configs, task.config.max_length)


def evaluate(config: ExperimentConfig, task: Task | None = None) -> dict[str, Any]:
    """Teacher vs student (and, for two-stage runs, the one-stage student) report; written next
    to the student and printed."""
    paths = Paths(config.output_dir)
    if not is_finished(paths.student):
        raise ConfigError(f"no distilled student in {paths.student}: run `kdformer distill` first")
    task = task or build_task(config.task, config.seed)
    two_stage = is_finished(paths.one_stage / "student")
    models: list[tuple[str, str | Path]] = [
        ("teacher", teacher_reference(config).name),
        ("two-stage student" if two_stage else "student", paths.student),
    ]
    if two_stage:
        models.append(("one-stage student", paths.one_stage / "student"))
    models += [(f"teacher {t.id}", t.name) for t in config.distill.teachers]
    known = {}
    stored = paths.root / "teacher_eval.json"
    if stored.is_file():
        entry = json.loads(stored.read_text(encoding="utf-8"))
        if entry.get("fingerprint") == teacher_fingerprint(teacher_reference(config), config.task):
            known["teacher"] = entry["metrics"]
    exported = exported_rows(paths.student, models[1][0], config.report)
    report = measure_models(
        models,
        config.task,
        config.report,
        config.seed,
        config.distill.train.eval_batch_size,
        config.teacher.trust_remote_code,
        task,
        known,
        [row[:4] for row in exported],
        run_pad_length(config, task, models),
    )
    details = {row[0]: row[4] for row in exported}
    for row in report["models"]:
        row["export"] = details.get(row["name"])
    held_out = paths.student / "held_out.json"
    if held_out.is_file():
        report["held_out"] = json.loads(held_out.read_text(encoding="utf-8"))
    compute = paths.one_stage / "compute.json"
    if compute.is_file():
        report["two_stage"] = json.loads(compute.read_text(encoding="utf-8"))
    write_report(report, config.output_dir)
    write_report(report, paths.student)
    write_model_card(
        paths.student, dump_config(config), config.teacher.name, report,
        task.model_class.__name__, task.card_dataset(), task.pipeline_tag,
        [row[4]["file"] for row in exported],
    )  # fmt: skip
    print_report(report)
    return report


def general(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> Path:
    """Stage one of two-stage distillation: the general student, in ``<output_dir>/general``."""
    return distill(general_config(config), overwrite, resume, callbacks)


def one_stage(
    config: ExperimentConfig,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    task: Task | None = None,
) -> Path:
    """The comparison of a two-stage run: task distillation alone, from the configured
    initialisation, with the tokens of both stages together."""
    paths = Paths(config.output_dir)
    compute = matched_steps(paths.general / "student", paths.student)
    comparison = one_stage_config(config, compute["one_stage_steps"])
    console.print(
        f"[bold]one-stage comparison[/]: {compute['one_stage_steps']} steps = task stage "
        f"{compute['task_steps']} + general stage's {compute['general_tokens']:,} tokens at "
        f"{compute['task_tokens_per_step']:.0f} tokens per task step"
    )
    stored = paths.root / "teacher_eval.json"
    measured = json.loads(stored.read_text(encoding="utf-8")) if stored.is_file() else None
    folder = distill(comparison, overwrite, resume, callbacks, task, teacher_eval=measured)
    paths.one_stage.mkdir(parents=True, exist_ok=True)
    (paths.one_stage / "compute.json").write_text(
        json.dumps(compute, indent=2) + "\n", encoding="utf-8"
    )
    return folder


def default_stages(config: ExperimentConfig) -> list[Stage]:
    """The stages a run config asks for: finetune and general only when configured."""
    return [
        s
        for s in STAGES
        if (s != "finetune" or config.finetune is not None)
        and (s != "general" or config.general is not None)
    ]


def run(
    config: ExperimentConfig,
    stages: Sequence[Stage] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any] | None:
    """Run the pipeline: finetune (when configured), general (two-stage runs), distill (and the
    one-stage comparison), evaluate."""
    if stages is None:
        stages = default_stages(config)
    task = validate(config, stages)
    if "finetune" in stages:
        finetune(config, overwrite, resume, callbacks, task)
    if "general" in stages:
        general(config, overwrite, resume, callbacks)
    if "distill" in stages:
        distill(config, overwrite, resume, callbacks, task)
        if config.general is not None and config.general.compare_one_stage:
            one_stage(config, overwrite, resume, callbacks, task)
    if "evaluate" in stages and distributed.is_main():  # one process measures and reports
        if config.export.enabled:
            export = config.export
            export_model(Paths(config.output_dir).student, export.quantize, export.opset,
                         export.atol, task=task)  # fmt: skip
        return evaluate(config, task)
    return None
