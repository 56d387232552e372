"""The model card written next to a distilled student: how it was made and how it measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdformer.report.render import to_markdown


def write_model_card(
    model_dir: str | Path,
    config_yaml: str,
    teacher_name: str,
    report: dict[str, Any] | None,
    model_class: str = "AutoModel",
) -> Path:
    """README.md with Hub-style front matter, the report table and the config that made it."""
    body = [
        "---",
        "library_name: transformers",
        "tags:",
        "- kdformer",
        "- knowledge-distillation",
        "---",
        "",
        "# Distilled student",
        "",
        f"Distilled with kdformer from teacher `{teacher_name}` (see the configuration below:",
        "with a `finetune` section, kdformer fine-tuned that teacher on the task first).",
        "Load it with plain `transformers`:",
        "",
        "```python",
        f"from transformers import {model_class}, AutoTokenizer",
        f'model = {model_class}.from_pretrained("{Path(model_dir).name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{Path(model_dir).name}")',
        "```",
        "",
    ]
    if report is not None:
        body += ["## Evaluation", "", to_markdown(report).split("\n", 2)[2], ""]
    body += ["## Configuration", "", "```yaml", config_yaml.rstrip(), "```", ""]
    path = Path(model_dir) / "README.md"
    path.write_text("\n".join(body), encoding="utf-8")
    return path
