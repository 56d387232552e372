"""Attention kernels at long lengths: full attention (SDPA) vs kdformer's local + global block
attention vs Longformer and BigBird, same shape (layers, width, heads, feed-forward).

Latency: models are timed round-robin in one process (one forward of each per round), median
of ``--repeats`` rounds, batch 1, inference mode. Peak memory: each (model, length) runs one
forward in a fresh process; the figure is that process's peak resident memory minus its
resident memory just before the forward (so weights and the interpreter are left out).
Writes ``attention.json`` and ``attention.md`` with ratios against full attention.

    python benchmarks/bench_attention.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from machine import describe_machine, machine_line

import kdformer.attention  # noqa: F401  (registers local + global attention)
from kdformer.attention import use_local_global

KINDS = ("full", "full_eager", "local_global", "longformer", "bigbird")
"""full: SDPA (torch's fused kernel, which never holds a seq x seq map on CPU); full_eager:
the same model with transformers' eager attention (maps materialised, as older kernels and
attention-map outputs do)."""


def build(kind: str, layers: int, hidden: int, heads: int, block: int, max_length: int):
    shape = dict(
        vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=max_length + 2,
    )  # fmt: skip
    torch.manual_seed(0)
    if kind in ("full", "full_eager", "local_global"):
        model = transformers.BertModel(transformers.BertConfig(**shape), add_pooling_layer=False)
        if kind == "full_eager":
            model.set_attn_implementation("eager")
        if kind == "local_global":
            use_local_global(model, block_size=block, global_tokens=1)
    elif kind == "longformer":
        config = transformers.LongformerConfig(**shape, attention_window=2 * block)
        model = transformers.LongformerModel(config, add_pooling_layer=False)
    else:
        config = transformers.BigBirdConfig(
            **shape, attention_type="block_sparse", block_size=block // 2, num_random_blocks=2
        )
        model = transformers.BigBirdModel(config, add_pooling_layer=False)
    return model.eval()


def inputs(length: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 1000, (1, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory(args: argparse.Namespace, kind: str, length: int) -> float:
    """MiB of resident memory one forward adds, measured in a fresh process."""
    # VmHWM (this process's peak) rather than ru_maxrss, which keeps the parent's peak
    # across fork + exec.
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import torch; import bench_attention as b;"
        f"m = b.build({kind!r}, {args.layers}, {args.hidden}, {args.heads}, {args.block}, "
        f"{max(args.lengths)}); x = b.inputs({length}); torch.set_grad_enabled(False);"
        "before = b.status_kib('VmRSS'); m(**x); print((b.status_kib('VmHWM') - before) / 1024)"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    models = {
        kind: build(kind, args.layers, args.hidden, args.heads, args.block, max(args.lengths))
        for kind in KINDS
    }
    rows = []
    for length in args.lengths:
        x = inputs(length)
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        with torch.inference_mode():
            for model in models.values():  # warm-up
                model(**x)
            for _ in range(args.repeats):
                for kind, model in models.items():
                    start = time.perf_counter()
                    model(**x)
                    times[kind].append((time.perf_counter() - start) * 1000)
        for kind in KINDS:
            rows.append(
                {
                    "length": length,
                    "kind": kind,
                    "latency_ms": statistics.median(times[kind]),
                    "peak_mib": peak_memory(args, kind, length),
                }
            )
            print(rows[-1], flush=True)
    by = {(r["length"], r["kind"]): r for r in rows}
    for r in rows:
        full = by[(r["length"], "full")]
        r["speedup_vs_full"] = full["latency_ms"] / r["latency_ms"]
        r["memory_ratio_vs_full"] = full["peak_mib"] / max(r["peak_mib"], 1e-6)
    machine = describe_machine("cpu")
    meta = {
        "command": "python benchmarks/bench_attention.py " + " ".join(sys.argv[1:]),
        "device": f"CPU ({machine['cpu_model']}, {machine['torch_threads']} threads)",
        "shape": {k: getattr(args, k) for k in ("layers", "hidden", "heads", "block")},
        "repeats": args.repeats,
        "torch": machine["torch"],
        "transformers": machine["transformers"],
        "machine": machine,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attention.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Attention at long lengths",
        "",
        f"`{meta['command']}` on {meta['device']}; {args.layers} layers x {args.hidden} wide, "
        f"{args.heads} heads, batch 1; local + global: blocks of {args.block} (+1 global token); "
        f"Longformer: window {2 * args.block}; BigBird: block-sparse, blocks of {args.block // 2}"
        ", 2 random blocks. Latency: median of "
        f"{args.repeats} interleaved rounds. Memory: peak resident memory one forward adds, "
        "fresh process.",
        "",
        f"Machine: {machine_line(machine)}.",
        "",
        "| tokens | attention | ms / forward | speed-up vs full | peak MiB | memory ratio vs full |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['length']} | {r['kind']} | {r['latency_ms']:.1f} | {r['speedup_vs_full']:.2f}x"
            f" | {r['peak_mib']:.0f} | {r['memory_ratio_vs_full']:.2f}x |"
        )
    (args.out / "attention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
