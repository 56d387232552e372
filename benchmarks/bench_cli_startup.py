"""Benchmark: how long the ``kdformer`` command takes to start, against Python's own floor.

Each command runs ``--repeats`` times in a fresh process, the commands taken round-robin (one
run of each per round, after one untimed warm-up round) so that load drifting on a shared CPU
touches them all alike. Per command: the median wall time (spawn to exit, as a user waits for
it), its ratio to ``python -c pass``, and the median peak resident memory of the process,
read with ``/usr/bin/time`` (or, without it, ``os.wait4``: then each figure also holds this
script's own footprint at spawn, as Linux carries it across fork and exec). One more run of
each, inside Python, records which heavy libraries the command imported (``torch``,
``transformers``, ...) and how many modules; ``python -X importtime kdformer --help`` gives
the imports that cost most.

The floor: ``python -c pass``, ``python -c "import torch"`` and ``python -c "import
transformers"``. The project's goal: ``kdformer --help`` under 1 s on the benchmark machine.

``python benchmarks/bench_cli_startup.py --out benchmarks/results`` (about a minute on 2 CPU
cores); writes ``cli_startup.json`` and ``cli_startup.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, load_average, machine_line

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 1.0
GOAL_COMMAND = "kdformer --help"
FLOOR = "python -c pass"
HEAVY = ("torch", "transformers", "datasets", "accelerate", "safetensors", "numpy", "scipy",
         "matplotlib", "pydantic", "yaml", "typer", "rich")  # fmt: skip
#: (name as shown, how the process starts): ``("python", code)`` or ``("kdformer", argv)``.
COMMANDS: list[tuple[str, tuple[str, list[str]]]] = [
    (FLOOR, ("python", ["pass"])),
    ('python -c "import torch"', ("python", ["import torch"])),
    ('python -c "import transformers"', ("python", ["import transformers"])),
    (GOAL_COMMAND, ("kdformer", ["--help"])),
    ("kdformer config fields distill", ("kdformer", ["config", "fields", "distill"])),
    ("kdformer config show configs/demo.yaml", ("kdformer", ["config", "show", "configs/demo.yaml"])),
]  # fmt: skip
PROBE = """
import json, sys
{body}
sys.stderr.write("\\n@@probe " + json.dumps({{
    "loaded": {{m: m in sys.modules for m in {heavy!r}}}, "modules": len(sys.modules)}}) + "\\n")
"""
CLI_BODY = """import sys
sys.argv = ["kdformer", *{argv!r}]
from kdformer.cli import main
try:
    main()
except SystemExit as exc:
    if exc.code not in (None, 0):
        raise
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command")
    parser.add_argument("--name", default="cli_startup", help="stem of the result files")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def kdformer_command() -> list[str]:
    """The installed console script next to this interpreter (what users run), else the
    module run with this interpreter."""
    script = Path(sys.executable).parent / "kdformer"
    if script.is_file():
        return [str(script)]
    found = shutil.which("kdformer")
    return [found] if found else [sys.executable, "-m", "kdformer.cli"]


def argv_of(spec: tuple[str, list[str]]) -> list[str]:
    kind, rest = spec
    if kind == "python":
        return [sys.executable, "-c", *rest]
    return [*kdformer_command(), *rest]


def probe_argv(spec: tuple[str, list[str]]) -> list[str]:
    """The same work inside ``python -c``, then which modules it left loaded."""
    kind, rest = spec
    body = rest[0] if kind == "python" else CLI_BODY.format(argv=rest)
    return [sys.executable, "-c", PROBE.format(body=body, heavy=HEAVY)]


def time_tool() -> str | None:
    tool = Path("/usr/bin/time")
    return str(tool) if tool.is_file() and os.access(tool, os.X_OK) else None


def parse_time_output(text: str) -> int:
    """Peak RSS in KiB from ``/usr/bin/time -f %M`` output (its last line; a failing command
    adds a 'Command exited with non-zero status' line before it)."""
    return int(text.strip().splitlines()[-1])


def run_once(argv: list[str], tool: str | None) -> tuple[float, float]:
    """One run: (wall seconds, peak RSS MiB). Raises when the command fails."""
    if tool:
        with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
            command = [tool, "-f", "%M", "-o", report.name, *argv]
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
            seconds = time.perf_counter() - start
            rss_kib = parse_time_output(report.read()) if done.returncode == 0 else 0
        status, stderr = done.returncode, done.stderr
    else:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        stderr = proc.stderr.read() if proc.stderr else ""
        _, wait_status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        status = proc.returncode = os.waitstatus_to_exitcode(wait_status)
        rss_kib = usage.ru_maxrss
    if status != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited with {status}:\n{stderr[-2000:]}")
    return seconds, rss_kib / 1024


def probe(spec: tuple[str, list[str]]) -> dict[str, Any]:
    done = subprocess.run(probe_argv(spec), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True)  # fmt: skip
    line = next(x for x in reversed(done.stderr.splitlines()) if x.startswith("@@probe "))
    return json.loads(line.removeprefix("@@probe "))


def parse_importtime(text: str, top: int = 15, max_depth: int = 2) -> list[dict[str, Any]]:
    """The costliest imports from ``python -X importtime`` output, by cumulative time: those
    the program itself asked for (depth 0) and up to ``max_depth`` levels below them."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative_us, name = line.split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        if depth <= max_depth:
            rows.append({"module": name.strip(), "depth": depth,
                         "cumulative_s": int(cumulative_us) / 1e6})  # fmt: skip
    rows.sort(key=lambda r: r["cumulative_s"], reverse=True)
    return rows[:top]


def import_profile() -> list[dict[str, Any]]:
    argv = [sys.executable, "-X", "importtime", "-c", CLI_BODY.format(argv=["--help"])]
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=True)  # fmt: skip
    return parse_importtime(done.stderr)


def summarize(
    name: str, spec: tuple[str, list[str]], times: list[float], rss: list[float], floor: float
) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "name": name,
        "argv": shlex.join(argv_of(spec)),
        "median_s": round(median, 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "ratio_vs_python_pass": round(median / floor, 2),
        "peak_rss_mib_median": round(statistics.median(rss), 1),
        "samples_s": [round(t, 4) for t in times],
        "peak_rss_mib_samples": [round(r, 1) for r in rss],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    tool = time_tool()
    commands = [(name, spec, argv_of(spec)) for name, spec in COMMANDS]
    times: dict[str, list[float]] = {name: [] for name, *_ in commands}
    rss: dict[str, list[float]] = {name: [] for name, *_ in commands}
    for name, _, argv in commands:  # warm-up: page cache, .pyc files
        print(f"warm-up: {name}", flush=True)
        run_once(argv, tool)
    for round_ in range(args.repeats):
        for name, _, argv in commands:
            seconds, mib = run_once(argv, tool)
            times[name].append(seconds)
            rss[name].append(mib)
        print(f"round {round_ + 1}/{args.repeats}: "
              + ", ".join(f"{n} {times[n][-1]:.2f}s" for n, *_ in commands), flush=True)  # fmt: skip
    floor = statistics.median(times[FLOOR])
    rows = []
    for name, spec, _ in commands:
        row = summarize(name, spec, times[name], rss[name], floor)
        row.update(probe(spec))
        rows.append(row)
    return {
        "rss_method": f"{tool} -f %M"
        if tool
        else "os.wait4 ru_maxrss (includes the parent's footprint at spawn)",
        "rows": rows,
        "import_profile_kdformer_help": import_profile(),
    }


def to_markdown(result: dict[str, Any]) -> str:
    goal = result["goal"]
    lines = [
        "# kdformer CLI start-up",
        "",
        f"Command: `{result['command']}`. Each command {result['repeats']} times in a fresh "
        "process, round-robin after one warm-up round; wall time from spawn to exit; peak "
        f'resident memory by `{result["rss_method"]}`. "Loads": whether the command left '
        "torch / transformers in `sys.modules` (one run of the same work inside `python -c`).",
        "",
        f"Machine: {machine_line(result['machine'])}. Load average at start "
        f"{result['load_average_start']}, at end {result['load_average_end']}.",
        "",
        "| command | median s | ratio vs `python -c pass` | peak MiB | loads torch? | loads "
        "transformers? | modules |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        loaded = r["loaded"]
        lines.append(
            f"| `{r['name']}` | {r['median_s']:.3f} | {r['ratio_vs_python_pass']:.1f}x | "
            f"{r['peak_rss_mib_median']:.0f} | {'yes' if loaded['torch'] else 'no'} | "
            f"{'yes' if loaded['transformers'] else 'no'} | {r['modules']} |"
        )
    verdict = "met" if goal["met"] else "NOT met"
    lines += [
        "",
        f"Goal `{GOAL_COMMAND}` under {GOAL_S:g} s: **{verdict}** (median {goal['median_s']:.3f} s).",
        "",
        f"Costliest imports of `{GOAL_COMMAND}` (`python -X importtime`, cumulative; depth 0: "
        "imported by the program itself, 1 and 2: below those):",
        "",
        "| module | depth | cumulative s |",
        "|---|---|---|",
        *(
            f"| {r['module']} | {r['depth']} | {r['cumulative_s']:.3f} |"
            for r in result["import_profile_kdformer_help"]
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {
        "command": shlex.join(
            [
                "python",
                "benchmarks/bench_cli_startup.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "repeats": args.repeats,
        "load_average_start": load_average(),
    }
    result.update(measure(args))
    result["load_average_end"] = load_average()
    help_row = next(r for r in result["rows"] if r["name"] == GOAL_COMMAND)
    result["goal"] = {
        "command": GOAL_COMMAND,
        "under_s": GOAL_S,
        "median_s": help_row["median_s"],
        "met": help_row["median_s"] < GOAL_S,
    }
    # Last: it imports torch, which (without /usr/bin/time) every later child's peak would hold.
    result["machine"] = describe_machine("cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{args.name}.json", args.out / f"{args.name}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(result), encoding="utf-8")
    print("\n" + to_markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
