"""Benchmark: a student's training step on the CPU with and without ``keep_freed_memory``.

Each step frees and reallocates its large buffers (the word-embedding gradient alone is
30,522 x 384 floats, 47 MB). glibc hands blocks that large back to the operating system, so
each returns as fresh pages that fault on first touch; ``kdformer.training.keep_freed_memory``
asks glibc to keep them for reuse. Two processes (the setting is process-wide), alternating
A/B/A/B, each timing ``--steps`` optimiser steps (forward, backward, fused AdamW, gradients set
to None) of a 3 x 384 MiniLM student on a 32 x 40 batch after ``--warmup`` steps.

``python benchmarks/bench_freed_memory.py --out benchmarks/results`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe_machine, machine_line


def child(keep: bool, steps: int, warmup: int) -> list[float]:
    import torch
    import transformers

    from kdformer.models import resolve_name
    from kdformer.training import keep_freed_memory

    if keep:
        assert keep_freed_memory()
    config = transformers.AutoConfig.from_pretrained(resolve_name("minilm-l6"), num_labels=2)
    config.num_hidden_layers = 3
    torch.manual_seed(0)
    student = transformers.AutoModelForSequenceClassification.from_config(config).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=True)
    inputs = torch.randint(1000, 5000, (32, 40))
    labels = torch.randint(0, 2, (32,))
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        out = student(input_ids=inputs, labels=labels, output_hidden_states=True)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["keep", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "keep", args.steps, args.warmup)))
        return
    times: dict[str, list[float]] = {"default": [], "keep": []}
    for _ in range(args.rounds):
        for mode in ("default", "keep"):
            result = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
                 "--warmup", str(args.warmup)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            times[mode] += json.loads(result.stdout.strip().splitlines()[-1])
    medians = {mode: statistics.median(t) * 1000 for mode, t in times.items()}
    payload = {
        "step_ms_median": {k: round(v, 1) for k, v in medians.items()},
        "ratio_keep_vs_default": round(medians["keep"] / medians["default"], 3),
        "steps_per_mode": len(times["keep"]),
        "machine": describe_machine("cpu"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "freed_memory.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = (
        "# keep_freed_memory: a 3 x 384 student's CPU training step (32 x 40 batch)\n\n"
        "| allocator | step ms (median) |\n|---|---|\n"
        f"| glibc default | {medians['default']:.1f} |\n"
        f"| keep_freed_memory | {medians['keep']:.1f} |\n\n"
        f"Ratio {payload['ratio_keep_vs_default']} over {payload['steps_per_mode']} steps each, "
        "two processes per mode, alternating.\n\n"
        f"Machine: {machine_line(payload['machine'])}.\n"
    )
    (args.out / "freed_memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
