"""Sentence-embedding students side by side: the teacher (all-MiniLM-L6-v2 as shipped),
kdformer's embedding students, sentence-transformers' own distillation recipe at the same
student shape, and model2vec's static distillation of the same teacher; on the same training
sentences and budget, scored by the same code on STS-B-train pairs and MRPC dev.

    python benchmarks/bench_embedding.py --out benchmarks/results [--smoke] [--rows NAME ...]

Rows:
- kdformer students: ``kdformer run configs/tasks/sts.yaml`` with each row's overrides
  (``KDFORMER_ROWS``), resumable (a finished run is reused).
- sentence-transformers' recipe: its layer-reduction example
  (examples/sentence_transformer/training/distillation/model_distillation_layer_reduction.py):
  the teacher with only layers 0, 2, 4 kept (the same layers kdformer's uniform
  initialisation copies), trained with ``losses.MSELoss`` to reproduce the teacher's
  embeddings of the same sentences, at the same epochs, batch size, learning rate and warm-up.
- model2vec: ``model2vec.distill.distill(teacher, pca_dims=256)``, the published package, run in
  the interpreter given by ``--model2vec-python`` (its ``[distill]`` extra pins an older
  transformers, so it lives in a virtual environment of its own: ``make bench-embedding``
  creates ``.venv-model2vec``). It writes its evaluation embeddings and timings; this script
  scores them like every other row.

Every model encodes the evaluation sentences through its own ``encode`` (sentence-transformers
for the transformer rows: kdformer students load with ``SentenceTransformer(folder)``), and
the cosine of each pair is scored by kdformer's embedding metrics (Spearman x100 on STS-B, the
main one; best-threshold accuracy/F1 on MRPC). Latency: median ms to encode one batch of 32
evaluation sentences, the transformer rows timed round-robin in this process; sentences/s =
32 / that median. Disk: the weights file(s) in fp32, and the int8 size: ONNX with dynamic int8
weights (kdformer's exporter) for transformer rows, int8 vectors for model2vec.

Writes ``embedding.json`` and ``embedding.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, machine_line

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tasks" / "sts.yaml"
TEACHER = "minilm-l6"
ST_LAYERS = (0, 2, 4)

# Each kdformer row: overrides of configs/tasks/sts.yaml (the training sentences, pooling,
# budget and evaluation pairs stay the same for every row).
PRUNED_192 = [
    "student.init=pruned",
    "student.hidden_size=192",
    "student.num_heads=6",
    "student.intermediate_size=768",
]
VOCAB_8K = ["student.vocabulary={train: wordpiece, size: 8000}"]
KDFORMER_ROWS: dict[str, list[str]] = {
    "kdformer 3 x 384": [],
    "kdformer 3 x 384, 8k vocabulary": VOCAB_8K,
    "kdformer 3 x 192 pruned": PRUNED_192,
    "kdformer 3 x 192 pruned, 8k vocabulary": PRUNED_192 + VOCAB_8K,
}


def smoke_overrides() -> list[str]:
    """A few steps on a few sentences: checks that every row runs, not what it scores."""
    return [
        "task.max_train_samples=64",
        "task.max_eval_samples=24",
        "task.max_length=32",
        "distill.train.max_steps=2",
        "distill.train.batch_size=8",
        "distill.cache=false",
        "distill.allow_weak_teacher=true",
        "report.latency_repeats=1",
        "report.latency_warmup=0",
        "report.memory=false",
    ]


def load(overrides: list[str]) -> Any:
    from kdformer.config import load_config

    return load_config(CONFIG, overrides)


def train_kdformer(name: str, extra: list[str], base: list[str], out: Path) -> dict[str, Any]:
    """Distil one kdformer row (skipped when its student is finished)."""
    from kdformer import pipeline
    from kdformer.config import ConfigError

    folder = out / "runs" / slug(name)
    try:
        config = load([*base, *extra, f"output_dir={folder}"])
    except ConfigError as exc:
        return {"name": name, "skipped": f"config refused: {exc}"}
    student = folder / "student"
    if not pipeline.is_finished(student):
        started = time.perf_counter()
        try:
            pipeline.run(config, stages=["distill"], resume=True)
        except ConfigError as exc:  # refused before training (e.g. pruning needs labels)
            return {"name": name, "skipped": f"refused: {exc}"}
        print(f"{name}: distilled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    record = json.loads((student / "training.json").read_text(encoding="utf-8"))
    return {
        "name": name,
        "path": str(student),
        "overrides": extra,
        "train_seconds": record.get("train_seconds"),
        "steps": record.get("steps"),
    }


def train_st_recipe(config: Any, sentences: list[str], out: Path, seed: int) -> dict[str, Any]:
    """sentence-transformers' layer-reduction distillation at the kdformer student's shape."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    from kdformer.models import resolve_name

    folder = out / "runs" / "st-recipe"
    name = f"sentence-transformers recipe 3 x 384 (layers {', '.join(map(str, ST_LAYERS))})"
    done = folder / "student" / "modules.json"
    train = config.distill.train
    if not done.is_file():
        teacher = SentenceTransformer(resolve_name(TEACHER), device="cpu")
        student = SentenceTransformer(resolve_name(TEACHER), device="cpu")
        student.max_seq_length = teacher.max_seq_length = config.task.max_length
        auto = student[0].auto_model
        auto.encoder.layer = torch.nn.ModuleList(auto.encoder.layer[i] for i in ST_LAYERS)
        auto.config.num_hidden_layers = len(ST_LAYERS)
        labels = teacher.encode(sentences, batch_size=64, convert_to_numpy=True)
        data = Dataset.from_dict({"sentence": sentences, "label": labels.tolist()})
        args = SentenceTransformerTrainingArguments(
            output_dir=str(folder / "checkpoints"),
            num_train_epochs=train.epochs if not train.max_steps else 1,
            max_steps=train.max_steps or -1,
            per_device_train_batch_size=train.batch_size,
            learning_rate=train.learning_rate,
            warmup_ratio=train.warmup_ratio,
            seed=seed,
            save_strategy="no",
            report_to="none",
            logging_steps=train.logging_steps,
            use_cpu=True,
        )
        started = time.perf_counter()
        trainer = SentenceTransformerTrainer(
            model=student, args=args, train_dataset=data, loss=losses.MSELoss(student)
        )
        trainer.train()
        seconds = time.perf_counter() - started
        student.save(str(folder / "student"))
        (folder / "training.json").write_text(
            json.dumps({"train_seconds": seconds, "steps": trainer.state.global_step}) + "\n",
            encoding="utf-8",
        )
    record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    return {"name": name, "path": str(folder / "student"), **record}


MODEL2VEC_SCRIPT = r"""
import json, sys, time, statistics
from pathlib import Path
import numpy as np
from model2vec.distill import distill
teacher, folder, sentences_file, batch = sys.argv[1], Path(sys.argv[2]), sys.argv[3], 32
sentences = json.loads(Path(sentences_file).read_text())
started = time.perf_counter()
model = distill(model_name=teacher, pca_dims=256)
seconds = time.perf_counter() - started
model.save_pretrained(str(folder / "model"))
vectors = model.encode(sentences)
np.save(folder / "embeddings.npy", vectors)
times = []
for _ in range(20):
    start = time.perf_counter()
    model.encode(sentences[:batch])
    times.append(time.perf_counter() - start)
weights = model.embedding
json.dump({"distill_seconds": seconds, "batch_ms": 1000 * statistics.median(times),
           "parameters": int(weights.size), "int8_mb": weights.size / 2**20,
           "dims": int(weights.shape[1]), "tokens": int(weights.shape[0])},
          open(folder / "model2vec.json", "w"))
"""


def evaluation_sentences(pairs: Any) -> list[str]:
    """Every distinct sentence of the evaluation pairs, in first-seen order: what each row
    encodes, and the order of the model2vec row's stored vectors."""
    return list(dict.fromkeys(list(pairs["sentence1"]) + list(pairs["sentence2"])))


def run_model2vec(python: str, sentences: list[str], out: Path) -> dict[str, Any]:
    """Distil with model2vec in its own interpreter (see the module docstring) and encode
    ``sentences`` (the evaluation sentences: model2vec distils from the teacher's vocabulary,
    not from training sentences). Vectors stored for other sentences are encoded again."""
    from kdformer.models import resolve_name

    folder = out / "runs" / "model2vec"
    folder.mkdir(parents=True, exist_ok=True)
    name = "model2vec (static, PCA 256)"
    sentences_file = folder / "sentences.json"
    stored = json.loads(sentences_file.read_text()) if sentences_file.is_file() else None
    sentences_file.write_text(json.dumps(sentences), encoding="utf-8")
    if stored != sentences or not (folder / "model2vec.json").is_file():
        done = subprocess.run(
            [
                python,
                "-c",
                MODEL2VEC_SCRIPT,
                resolve_name(TEACHER),
                str(folder),
                str(sentences_file),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {"name": name, "skipped": f"model2vec failed with {python}: {' '.join(tail)}"}
    return {"name": name, "path": str(folder / "model"), "static": True}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def weights_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 2**20


def int8_mb(folder: Path, scratch: Path) -> float:
    """MiB of the model as ONNX with dynamic int8 weights (kdformer's exporter)."""
    import torch
    from transformers import AutoModel

    from kdformer.export.onnx import export_onnx, onnx_size_mb, quantize_int8

    model = AutoModel.from_pretrained(folder)
    inputs = {
        "input_ids": torch.ones(2, 8, dtype=torch.long),
        "attention_mask": torch.ones(2, 8, dtype=torch.long),
    }
    scratch.mkdir(parents=True, exist_ok=True)
    export_onnx(model, inputs, scratch / "model.onnx")
    quantize_int8(scratch / "model.onnx", scratch / "model_int8.onnx")
    return onnx_size_mb(scratch / "model_int8.onnx")


def encoder_folder(path: Path) -> Path:
    """The transformers folder inside a sentence-transformers model (the model's root, or the
    path its first module names)."""
    modules = path / "modules.json"
    if modules.is_file():
        first = json.loads(modules.read_text(encoding="utf-8"))[0].get("path", "")
        return path / first if first else path
    return path


def cosines(first: Any, second: Any) -> Any:
    import numpy as np

    first = first / np.linalg.norm(first, axis=1, keepdims=True).clip(1e-12)
    second = second / np.linalg.norm(second, axis=1, keepdims=True).clip(1e-12)
    return (first * second).sum(axis=1)


def score_rows(rows: list[dict[str, Any]], task: Any, repeats: int, out: Path) -> None:
    """Encode, score, time and size every trained row, in place."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from kdformer.tasks.embedding import pair_metrics

    pairs = task.load("eval")
    sentences = evaluation_sentences(pairs)
    index = {s: i for i, s in enumerate(sentences)}
    first = [index[s] for s in pairs["sentence1"]]
    second = [index[s] for s in pairs["sentence2"]]
    batch = sentences[:32]
    models: dict[str, Any] = {}
    for row in rows:
        if "path" not in row:
            continue
        if row.get("static"):
            folder = Path(row["path"]).parent
            vectors = np.load(folder / "embeddings.npy")
            encoded = json.loads((folder / "sentences.json").read_text(encoding="utf-8"))
            if encoded != sentences or len(vectors) != len(sentences):
                raise RuntimeError(
                    f"{folder}: the stored vectors are not of the evaluation sentences "
                    f"({len(vectors)} vectors, {len(sentences)} sentences): remove the folder"
                )
            info = json.loads((folder / "model2vec.json").read_text(encoding="utf-8"))
            row.update(
                parameters=info["parameters"],
                batch_ms=info["batch_ms"],
                fp32_mb=weights_mb(Path(row["path"])),
                int8_mb=info["int8_mb"],
                timing="model2vec's encode, in its own process",
            )
        else:
            model = SentenceTransformer(row["path"], device="cpu")
            model.max_seq_length = task.config.max_length
            models[row["name"]] = model
            vectors = model.encode(sentences, batch_size=64, convert_to_numpy=True)
            row.update(
                parameters=sum(p.numel() for p in model.parameters()),
                fp32_mb=weights_mb(encoder_folder(Path(row["path"]))),
                int8_mb=int8_mb(
                    encoder_folder(Path(row["path"])), out / "onnx" / slug(row["name"])
                ),
                timing="round-robin with the other transformer rows, this process",
            )
        similarities = cosines(vectors[first], vectors[second])
        row["metrics"] = {k: 100 * v for k, v in pair_metrics(similarities, pairs).items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model.encode(batch, batch_size=32)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model.encode(batch, batch_size=32)
                times[name].append(time.perf_counter() - start)
    for row in rows:
        if row["name"] in times:
            row["batch_ms"] = 1000 * statistics.median(times[row["name"]])
    for row in rows:
        if "batch_ms" in row:
            row["sentences_per_s"] = 32 / (row["batch_ms"] / 1000)


def relative(rows: list[dict[str, Any]]) -> None:
    teacher = next(r for r in rows if r["name"].startswith("teacher"))
    for row in rows:
        if "metrics" not in row:
            continue
        spearman = row["metrics"].get("spearman")
        row["pct_of_teacher"] = 100 * spearman / teacher["metrics"]["spearman"]
        row["param_ratio"] = row["parameters"] / teacher["parameters"]
        row["speedup"] = teacher["batch_ms"] / row["batch_ms"]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Sentence-embedding students side by side",
        "",
        f"`{result['command']}`. Teacher: all-MiniLM-L6-v2 as shipped (mean pooling, "
        "normalised). Every student learns from the same "
        f"{result['train_sentences']:,} training sentences (SST-2 and MRPC training text, "
        f"evaluation sentences left out) for {result['budget']}. Scored by the same code: "
        f"Spearman x100 of cosine similarity on {result['sts_pairs']:,} STS-B-train pairs; "
        f"MRPC dev ({result['paraphrase_pairs']} pairs): accuracy and F1 at the best cosine "
        "threshold. Latency: median ms to encode 32 evaluation sentences "
        f"({result['repeats']} rounds, transformer rows round-robin in one process); "
        "int8: ONNX dynamic int8 (transformer rows), int8 vectors (model2vec).",
        "",
        "| model | Spearman | % of teacher | MRPC acc | MRPC F1 | params M | x teacher | "
        "fp32 MB | int8 MB | ms / 32 | speed-up | sentences/s | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if "metrics" not in row:
            lines.append(f"| {row['name']} | not run: {row.get('skipped', '')} |" + " |" * 11)
            continue
        m = row["metrics"]
        train = row.get("train_seconds") or row.get("distill_seconds")
        lines.append(
            f"| {row['name']} | {m['spearman']:.2f} | {row['pct_of_teacher']:.1f}% | "
            f"{m.get('accuracy', float('nan')):.2f} | {m.get('f1', float('nan')):.2f} | "
            f"{row['parameters'] / 1e6:.2f} | {row['param_ratio']:.2f} | {row['fp32_mb']:.1f} | "
            f"{row['int8_mb']:.1f} | {row['batch_ms']:.1f} | {row['speedup']:.2f}x | "
            f"{row['sentences_per_s']:.0f} | {'-' if train is None else f'{train:.0f}'} |"
        )
    lines += ["", f"Machine: {machine_line(result['machine'])}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_embedding")
    parser.add_argument("--smoke", action="store_true", help="tiny budget: checks it runs")
    parser.add_argument("--rows", nargs="*", help="only these kdformer rows (by name)")
    parser.add_argument(
        "--model2vec-python",
        default=str(ROOT / ".venv-model2vec" / "bin" / "python"),
        help="interpreter with model2vec[distill] installed ('' to leave model2vec out)",
    )
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.chdir(ROOT)  # the config's data paths are relative to the repository root
    from kdformer.models import resolve_name
    from kdformer.tasks import build_task

    base = smoke_overrides() if args.smoke else []
    config = load(base)
    task = build_task(config.task, config.seed)
    sentences = list(task.load("train")["sentence"])
    rows: list[dict[str, Any]] = [
        {"name": "teacher (all-MiniLM-L6-v2)", "path": resolve_name(TEACHER)}
    ]
    for name, extra in KDFORMER_ROWS.items():
        if args.rows is None or name in args.rows:
            rows.append(train_kdformer(name, extra, base, args.runs))
    rows.append(train_st_recipe(config, sentences, args.runs, config.seed))
    if args.model2vec_python:
        evaluation = evaluation_sentences(task.load("eval"))
        rows.append(run_model2vec(args.model2vec_python, evaluation, args.runs))
    repeats = 2 if args.smoke else args.repeats
    score_rows(rows, task, repeats, args.runs)
    relative(rows)
    pairs = task.load("eval")
    kinds = list(pairs["kind"])
    train = config.distill.train
    budget = (
        f"{train.max_steps} steps" if train.max_steps else f"{train.epochs:g} epochs"
    ) + f" of {train.batch_size} sentences at learning rate {train.learning_rate:g}"
    result = {
        "command": "python benchmarks/bench_embedding.py" + (" --smoke" if args.smoke else ""),
        "smoke": args.smoke,
        "train_sentences": len(sentences),
        "budget": budget,
        "sts_pairs": kinds.count("sts"),
        "paraphrase_pairs": kinds.count("paraphrase"),
        "repeats": repeats,
        "rows": rows,
        "machine": describe_machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "embedding_smoke" if args.smoke else "embedding"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
