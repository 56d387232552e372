"""The benchmarks' shared helpers: the machine description and the CLI start-up parsing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_cli_startup  # noqa: E402
from machine import describe_machine, machine_line  # noqa: E402


def test_machine_description_keeps_the_keys_results_already_have():
    machine = describe_machine()
    old_keys = {"cpu_count", "cpus_usable", "cpu_model", "torch_threads", "cuda", "platform",
                "python", "torch", "transformers", "kdformer"}  # fmt: skip
    assert old_keys | {"ram_gib", "device", "date"} <= set(machine)
    json.dumps(machine)  # JSON-ready
    line = machine_line(machine)
    assert machine["torch"] in line and machine["python"] in line
    assert machine_line("x86_64, 2 CPU cores") == "x86_64, 2 CPU cores"  # older result files


def test_describe_machine_names_the_device_it_is_given():
    assert describe_machine("cpu")["device"] == "cpu"


def test_time_output_parsed_also_after_a_failure_line():
    assert bench_cli_startup.parse_time_output("41236\n") == 41236
    text = "Command exited with non-zero status 2\n5120\n"
    assert bench_cli_startup.parse_time_output(text) == 5120


def test_importtime_keeps_the_top_levels_by_cumulative_time():
    text = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 |       too.deep",
            "import time:       100 |        200 |     deep.module",
            "import time:       200 |      30000 |   kdformer",
            "import time:       300 |      50000 | kdformer.cli",
            "import time:        10 |         10 | site",
        ]
    )
    rows = bench_cli_startup.parse_importtime(text)
    assert [(r["module"], r["depth"]) for r in rows] == [
        ("kdformer.cli", 0),
        ("kdformer", 1),
        ("deep.module", 2),
        ("site", 0),
    ]
    assert rows[0]["cumulative_s"] == 0.05


def test_probe_programs_compile():
    for _, spec in bench_cli_startup.COMMANDS:
        argv = bench_cli_startup.probe_argv(spec)
        compile(argv[-1], "<probe>", "exec")
