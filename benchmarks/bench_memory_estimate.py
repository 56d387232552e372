"""Benchmark: kdformer's memory estimate before training against a measured training step.

For each BERT shape, a fresh process builds the model, reads its resident memory, runs one
AdamW step (forward, backward, optimiser step) on a ``batch x length`` batch and reads its peak
(``VmHWM``): the growth is gradients, optimiser state and activations at their peak. The
estimate (:func:`kdformer.pipeline.budget.estimate_training_memory`) minus the weights it
counts is set beside it. On a GPU (``--device cuda``) the same step is measured with
``torch.cuda.max_memory_allocated``.

``python benchmarks/bench_memory_estimate.py --out benchmarks/results`` (about a minute on
2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from machine import describe_machine, machine_line

#: (layers, hidden, heads, batch, length): MiniLM-L6, BERT-base, a narrow long-input model.
SHAPES = [(6, 384, 12, 32, 128), (12, 768, 12, 16, 128), (4, 256, 4, 32, 512), (3, 384, 12, 32, 64)]


def child(layers: int, hidden: int, heads: int, batch: int, length: int, device: str) -> None:
    import torch
    import transformers

    from kdformer.pipeline.budget import estimate_training_memory
    from kdformer.report.memory import status_kib

    config = transformers.BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, num_labels=2,
    )  # fmt: skip
    cls = transformers.AutoModelForSequenceClassification
    estimate = estimate_training_memory(cls, config, [], None, batch, length, 0, "no",
                                        torch.device(device))  # fmt: skip
    model = cls.from_config(config).train().to(device)
    weights = 4 * sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters())
    ids = torch.randint(1000, 30000, (batch, length), generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(batch, dtype=torch.long)
    ids, labels = ids.to(device), labels.to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = status_kib("VmRSS") * 1024
    model(input_ids=ids, labels=labels).loss.backward()
    optimizer.step()
    if device == "cuda":
        measured = torch.cuda.max_memory_allocated() - base
    else:
        measured = status_kib("VmHWM") * 1024 - base
    print(json.dumps({"measured": measured, "estimated": estimate.total_bytes - weights}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=6)
    args = parser.parse_args()
    if args.child:
        *numbers, device = args.child
        child(*map(int, numbers), device)
        return
    rows = []
    for shape in SHAPES:
        command = [sys.executable, __file__, "--child", *map(str, shape), args.device]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        layers, hidden, heads, batch, length = shape
        rows.append({
            "shape": f"{layers} x {hidden} ({heads} heads)", "batch": batch, "length": length,
            "measured_mib": result["measured"] / 2**20,
            "estimated_mib": result["estimated"] / 2**20,
            "ratio": result["estimated"] / result["measured"],
        })  # fmt: skip
        print(rows[-1])
    machine = describe_machine(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "memory_estimate" + ("" if args.device == "cpu" else f"_{args.device}")
    (args.out / f"{name}.json").write_text(
        json.dumps({"device": args.device, "machine": machine, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        f"# Memory estimate vs one measured AdamW training step ({args.device})",
        "",
        "Growth of resident memory (CPU) or allocated memory (CUDA) over the loaded model "
        "during one forward, backward and optimiser step, against kdformer's estimate less "
        "the weights. `python benchmarks/bench_memory_estimate.py`.",
        "",
        f"Machine: {machine_line(machine)}.",
        "",
        "| model | batch x length | measured MiB | estimated MiB | estimate / measured |",
        "|---|---|---|---|---|",
        *(
            f"| {r['shape']} | {r['batch']} x {r['length']} | {r['measured_mib']:.0f} | "
            f"{r['estimated_mib']:.0f} | {r['ratio']:.2f} |"
            for r in rows
        ),
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
