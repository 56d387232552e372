"""The model card written next to a distilled student: how it was made and how it measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdformer.models import base_model_of
from kdformer.report.render import to_markdown
from kdformer.tasks import Task


def card_metadata(
    model_dir: str | Path,
    teacher_name: str,
    report: dict[str, Any] | None,
    pipeline_tag: str | None,
    dataset: dict[str, str] | None,
    task: Task | None = None,
) -> dict[str, Any]:
    """The Hugging Face card's front matter: library, pipeline tag, base model, data sets and
    a model-index with the student's measured metrics (so the Hub renders its results); the
    ``task`` names its library and tags (sentence-transformers for an embedding model)."""

    meta: dict[str, Any] = {"library_name": task.card_library if task else "transformers"}
    if pipeline_tag:
        meta["pipeline_tag"] = pipeline_tag
    meta["tags"] = [*(task.card_tags if task else ()), "kdformer", "knowledge-distillation"]
    base = base_model_of(teacher_name)
    if base:
        meta["base_model"] = base
    if dataset:
        meta["datasets"] = [dataset["type"]]
    student = next(
        (m for m in (report or {}).get("models", []) if "student" in str(m.get("name"))), None
    )
    if student and student.get("metrics"):
        main = (report or {}).get("main_metric")
        names = sorted(student["metrics"], key=lambda k: (k != main, k))
        result: dict[str, Any] = {
            "metrics": [
                {"type": k, "name": k.replace("_", " "), "value": round(float(v), 4)}
                for k, v in ((k, student["metrics"][k]) for k in names)
                if isinstance(v, int | float)
            ]
        }
        if pipeline_tag:
            result["task"] = {"type": pipeline_tag}
        if dataset:
            result["dataset"] = {k: v for k, v in dataset.items() if v}
        meta["model-index"] = [{"name": Path(model_dir).name, "results": [result]}]
    return meta


def write_model_card(
    model_dir: str | Path,
    config_yaml: str,
    teacher_name: str,
    report: dict[str, Any] | None,
    model_class: str = "AutoModel",
    dataset: dict[str, str] | None = None,
    pipeline_tag: str | None = None,
    onnx_files: list[str] | None = None,
    task: Task | None = None,
) -> Path:
    """README.md with Hugging Face front matter (:func:`card_metadata`), how to load the model
    (the ``task``'s usage code, else plain ``transformers`` with ``model_class``), the report
    table and the config that made it."""
    import yaml

    meta = card_metadata(model_dir, teacher_name, report, pipeline_tag, dataset, task)
    name = Path(model_dir).name
    library = "plain `transformers`" if meta["library_name"] == "transformers" else (
        f"`{meta['library_name']}`"
    )  # fmt: skip
    usage = (
        task.usage_code(name)
        if task is not None
        else [
            "```python",
            f"from transformers import {model_class}, AutoTokenizer",
            f'model = {model_class}.from_pretrained("{name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
            "```",
        ]
    )
    body = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        "# Distilled student",
        "",
        f"Distilled with kdformer from teacher `{teacher_name}` (see the configuration below:",
        "with a `finetune` section, kdformer fine-tuned that teacher on the task first).",
        f"Load it with {library}:",
        "",
        *usage,
        "",
    ]
    if onnx_files:
        names = " and ".join(f"`{Path(f).name}`" for f in onnx_files)
        body += [
            "## ONNX",
            "",
            f"`onnx/` holds {names} (int8: dynamic quantisation), exported with `kdformer "
            "export` and checked against the PyTorch outputs (see the table below). With ONNX "
            "Runtime:",
            "",
            "```python",
            "import onnxruntime, numpy as np",
            "from transformers import AutoTokenizer",
            f'tokenizer = AutoTokenizer.from_pretrained("{Path(model_dir).name}/onnx")',
            f'session = onnxruntime.InferenceSession("{Path(model_dir).name}/onnx/'
            f'{Path(onnx_files[-1]).name}")',
            'batch = tokenizer(["an example"], return_tensors="np")',
            "names = [i.name for i in session.get_inputs()]",
            "outputs = session.run(None, {k: batch[k].astype(np.int64) for k in names})",
            "```",
            "",
        ]
    if report is not None:
        body += ["## Evaluation", "", to_markdown(report).split("\n", 2)[2], ""]
    body += ["## Configuration", "", "```yaml", config_yaml.rstrip(), "```", ""]
    path = Path(model_dir) / "README.md"
    path.write_text("\n".join(body), encoding="utf-8")
    return path
