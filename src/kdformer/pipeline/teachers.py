"""The task-trained teacher: which model it is, loading it (refusing an untrained head), and
checking before distillation that it has learnt something (its score against the task's
trivial baseline, measured once per teacher and task and kept in ``teacher_eval.json``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kdformer import distributed
from kdformer.cache import RowIndexCollator, TeacherCache, folder_fingerprint, with_row_index
from kdformer.config import ConfigError, DataError, ExperimentConfig, ModelConfig
from kdformer.devices import folder_problem, resolve_device
from kdformer.features import FeatureNeeds
from kdformer.models import load_model, load_tokenizer, resolve_name
from kdformer.pipeline.outputs import Paths, console
from kdformer.report.render import teacher_gain_is_clear
from kdformer.tasks import Task, TaskSection
from kdformer.tasks.evaluation import evaluate_model
from kdformer.teacher import LiveTeacher


def teacher_reference(config: ExperimentConfig) -> ModelConfig:
    """The task-trained teacher: the fine-tuned one when `finetune:` is set, else `teacher`."""
    if config.finetune is None:
        return config.teacher
    return config.teacher.model_copy(update={"name": str(Paths(config.output_dir).teacher)})


def head_missing_keys(model: Any, info: dict[str, Any]) -> list[str]:
    """Weights the checkpoint lacked outside the base model: the task head was never trained.
    (A missing pooler, part of the base model, does not count; a bare encoder has no head.)"""
    if getattr(model, "base_model", None) is model:
        return []
    prefix = getattr(model, "base_model_prefix", "") + "."
    return sorted(k for k in info.get("missing_keys", []) if not k.startswith(prefix))


def load_task_model(reference: ModelConfig, task: Task, role: str, fix: str) -> Any:
    """Load a task-trained model in the task's label order, refusing one whose task head was
    never trained (``role`` and ``fix`` word the error)."""
    model, info = load_model(reference, task.model_class, output_loading_info=True)
    missing = head_missing_keys(model, info)
    if missing:
        raise ConfigError(
            f"{role} '{reference.name}' has no trained task head (its checkpoint lacks the "
            f"{type(model).__name__} weights {missing[:6]}). {fix}"
        )
    task.check_model(model.config)
    task.align_model(model)
    return model


def load_teacher(reference: ModelConfig, task: Task) -> Any:
    """Load a task-trained teacher (see :func:`load_task_model`)."""
    fix = "Fine-tune it on the task first: add a `finetune:` section to the config"
    return load_task_model(reference, task, "teacher", fix + task.missing_head_hint())


def check_other_teachers(
    config: ExperimentConfig, task: Task, model_configs: dict[str, Any], main_tokenizer: Any
) -> None:
    """The teachers of ``distill.teachers``, before any training: a `finetune:` section
    fine-tunes the main teacher only, and these were once checked after it, with advice to add
    the `finetune:` section the config had. Each must take the task's inputs, tokenise as the
    main teacher does (soft labels are mixed position by position) and have a head trained
    for the task's labels (its weights are loaded once here to see that)."""
    main_vocab = main_tokenizer.get_vocab()
    for extra in config.distill.teachers:
        where = f"distill.teachers: teacher {extra.id} '{extra.name}'"
        fix = (
            "A `finetune:` section fine-tunes only `teacher`: fine-tune this one first "
            f"(kdformer finetune CONFIG teacher.name={extra.name} output_dir=DIR) and list "
            "DIR/teacher here, or leave it out of distill.teachers"
        )
        task.check_lengths(model_configs[extra.id], extra.name)
        vocab = load_tokenizer(extra).get_vocab()
        if vocab != main_vocab:
            raise ConfigError(
                f"{where} has another tokenizer than the teacher '{config.teacher.name}' "
                f"({len(vocab)} vs {len(main_vocab)} tokens): the teachers' outputs are mixed "
                "and compared position by position, so they must tokenise alike. Use a teacher "
                "trained with the main teacher's tokenizer, or distil from each alone"
            )
        try:
            task.check_model(model_configs[extra.id])
        except DataError as exc:
            hint = getattr(task, "_fix_hint", lambda: "")()
            text = str(exc).replace(hint, "").strip() if hint else str(exc)
            raise ConfigError(f"{where}: {text} {fix}") from None
        load_task_model(extra, task, where.removesuffix(f" '{extra.name}'"), fix)


def teacher_fingerprint(reference: ModelConfig, task_config: TaskSection) -> str:
    """Identifies a teacher evaluation: the model (a local folder by the content of its
    weights, config and tokenizer files, see :func:`folder_fingerprint`; else its hub name)
    and the task section. Content, not file sizes and times: a teacher retrained to the same
    size and saved within the same second is evaluated again, a re-saved identical one not."""

    source = Path(resolve_name(reference.name))
    model = folder_fingerprint(source) if source.is_dir() else str(reference.name)
    payload = {
        "model": model,
        "revision": reference.revision,
        "task": task_config.model_dump(mode="json"),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_teacher(
    config: ExperimentConfig, task: Task, teacher: Any, tokenizer: Any, pad_to: int | None = None
) -> dict[str, Any] | None:
    """The teacher's metrics on the evaluation set and the task's trivial baseline, measured
    once per teacher and task (``teacher_eval.json`` in ``output_dir``). None when the task
    has no baseline to compare with (raw text). ``pad_to``: the run's one batch length."""

    with distributed.main_first():  # the others then read what the main process stored
        return _evaluate_teacher(config, task, teacher, tokenizer, pad_to)


def _evaluate_teacher(
    config: ExperimentConfig, task: Task, teacher: Any, tokenizer: Any, pad_to: int | None
) -> dict[str, Any] | None:

    reference = teacher_reference(config)
    key = teacher_fingerprint(reference, config.task)
    path = config.output_dir / "teacher_eval.json"
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == key:
            return stored
    baseline = task.baseline(task.load("train"), task.load("eval"))
    if baseline is None:
        return None
    metrics = evaluate_model(
        teacher,
        task,
        task.load("eval"),
        tokenizer,
        config.distill.train.eval_batch_size,
        resolve_device(config.report.device),
        "evaluate teacher",
        pad_to=pad_to,
    )
    result = {
        "fingerprint": key,
        "teacher": reference.name,
        "main_metric": task.main_metric,
        "metrics": metrics,
        "baseline": baseline,
        "baseline_name": task.baseline_name,
    }
    config.output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def check_teacher(config: ExperimentConfig, task: Task, measured: dict[str, Any] | None) -> None:
    """Stop when the teacher does not beat the trivial baseline by ``report.min_teacher_gain``
    of the headroom (retention would be meaningless), unless ``distill.allow_weak_teacher``."""
    if measured is None or task.main_metric is None or not task.higher_is_better:
        return
    main = task.main_metric
    value, floor = measured["metrics"].get(main), (measured["baseline"] or {}).get(main)
    if value is None or floor is None:
        return
    share = config.report.min_teacher_gain
    if teacher_gain_is_clear(value, floor, share):
        return
    message = (
        f"the teacher scores {100 * value:.2f} {main} on the evaluation set, and always "
        f"predicting the {task.baseline_name} scores {100 * floor:.2f}: it does not close "
        f"{share:.0%} of the gap to a perfect score (it would need "
        f"{100 * (floor + share * (1 - floor)):.2f}), so it has learnt too little to distil and "
        "a student's retention would be meaningless."
    )
    if config.distill.allow_weak_teacher:
        console.print(f"[yellow]warning: {message} Distilling anyway (allow_weak_teacher).[/]")
        return
    fix = (
        "Fine-tune it longer or on more data (finetune.epochs, task.max_train_samples, "
        "finetune.learning_rate)"
        if config.finetune is not None
        else "Use a teacher trained for this task, or add a `finetune:` section"
    )
    raise ConfigError(
        f"{message} {fix}; or pass --allow-weak-teacher (distill.allow_weak_teacher: true) to "
        "distil anyway."
    )


def teacher_signal(
    config: ExperimentConfig,
    teacher: Any,
    tokenizer: Any,
    task: Task,
    needs: FeatureNeeds,
    train_features: Any,
    pad_to: int | None = None,
) -> tuple[Any, Any, Any]:
    """The teacher signal distillation trains on, with the training features and collator it
    goes with: the live teacher, or (``distill.cache``) the teacher-output cache, filled once
    by the main process and read by every process. ``pad_to``: the run's one batch length
    (the collators pad to it, and a cache entry is kept per length)."""

    live = LiveTeacher(teacher, needs)
    cache = config.distill.cache
    if not cache.enabled or needs == FeatureNeeds():
        return live, train_features, task.collator(tokenizer, "train", pad_to)
    train_features = with_row_index(task.static_training_features(train_features, tokenizer))
    collator = RowIndexCollator(task.collator(tokenizer, "train", pad_to))
    store = TeacherCache(cache.root, cache.dtype, cache.topk, cache.max_gb, log=console.print)
    with distributed.main_first():
        signal = store.prepare(
            teacher,
            tokenizer,
            train_features,
            collator,
            task.outputs,
            needs,
            task.config.max_length,
            pad_to,
            config.distill.train.eval_batch_size,
            distributed.training_device(config.distill.train.use_cpu),
            live,
            distributed.is_main(),
            task,
        )
    return signal, train_features, collator


def check_cache_setup(config: ExperimentConfig) -> None:
    """ConfigError, before training, for a cache setting the objective cannot use."""
    cache = config.distill.cache
    if not cache.enabled:
        return
    problem = folder_problem(cache.root)
    if problem is not None:
        source = (
            "distill.cache.dir" if cache.dir is not None else "KDFORMER_CACHE_DIR (or ~/.cache)"
        )
        raise ConfigError(
            f"the teacher cache cannot live there: {problem}. Point {source} at a folder you "
            "can write, or set distill.cache: false"
        )
    if cache.topk is None:
        return
    for term in config.distill.knowledge:
        if getattr(term, "type", None) == "logits" and getattr(term, "loss", "kl") == "mse":
            raise ConfigError(
                f"distill.cache.topk: {cache.topk} keeps only the largest logits, and the mse "
                "logits loss compares every logit: use loss: kl, or drop cache.topk"
            )
