"""The house's rules that a test can hold: configuration and ``--help`` load no torch, and the
README's architecture map names every package and module of the tree (and nothing else).

The layering itself is an import-linter contract (``[tool.importlinter]`` in pyproject.toml,
run by ``make test`` / ``make lint`` as ``lint-imports``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "kdformer"
HEAVY = ("torch", "transformers", "datasets", "accelerate", "torchmetrics")


def loaded_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; which heavy libraries it left in sys.modules."""
    probe = (
        "import io, contextlib, json, sys\n"
        f"{code}\n"
        f"print('\\n' + json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_and_validating_configuration_loads_no_torch():
    loaded = loaded_after(
        "from kdformer.config import load_config\n"
        "config = load_config('configs/demo.yaml', ['student.num_layers=2'])\n"
        "assert config.student.num_layers == 2"
    )
    assert loaded == dict.fromkeys(HEAVY, False)


def test_the_package_root_loads_torch_only_when_a_heavy_name_is_used():
    assert not any(loaded_after("import kdformer; kdformer.ExperimentConfig").values())
    assert loaded_after("import kdformer; kdformer.Distiller")["torch"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["distill", "--help"],
        ["config", "fields", "distill"],
        ["config", "show", "configs/demo.yaml"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_help_and_config_commands_load_no_torch(argv):
    code = (
        "from kdformer.cli import app\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        app({argv!r}, prog_name='kdformer')\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code in (0, None), (stop.code, out.getvalue())\n"
        "assert out.getvalue().strip()"
    )
    assert loaded_after(code) == dict.fromkeys(HEAVY, False)


# --------------------------------------------------------------------------------------------
# The README's architecture map
# --------------------------------------------------------------------------------------------

ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[A-Za-z_]\w*(?:\.py|/))(?: {2,}\S|$)")


def map_entries(readme: str) -> set[str]:
    """Paths (relative to ``src/kdformer``) named in the README's ``## Architecture`` block:
    a ``name/`` opens a package for the deeper-indented lines below it."""
    section = readme.split("\n## Architecture", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    lines = block.splitlines()[1:]
    assert lines and lines[0].strip() == "src/kdformer/", "the map starts at src/kdformer/"
    entries: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in lines[1:]:
        found = ENTRY.match(line)
        if not found or not found["indent"] or found["name"] == "__init__.py":
            continue  # unindented: outside src/kdformer; a package's __init__ is the package
        indent, name = len(found["indent"]), found["name"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([*(p for _, p in stack), name.rstrip("/")])
        entries.add(path + ("/" if name.endswith("/") else ""))
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
    return entries


def tree_entries() -> set[str]:
    """Every package (``name/``) and module of src/kdformer; ``__init__.py`` is the package."""
    entries: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if "__pycache__" in relative.parts or relative.parts[0].endswith(".egg-info"):
            continue
        if relative.name == "__init__.py":
            if relative.parent != Path("."):
                entries.add(relative.parent.as_posix() + "/")
        else:
            entries.add(relative.as_posix())
    return entries


def test_map_parser_reads_nested_packages():
    readme = (
        "x\n## Architecture\n\n```\nsrc/kdformer/\n  cli.py      the CLI\n  config/     sections\n"
        "    __init__.py  exports\n    base.py   the base\n    tasks/    task sections\n      qa.py   qa\n"
        "  tasks/      the tasks\n              continued/ text\n  models.py   loading\nconfigs/  docs/\n```\n"
        "## Next\n"
    )
    assert map_entries(readme) == {
        "cli.py",
        "config/",
        "config/base.py",
        "config/tasks/",
        "config/tasks/qa.py",
        "tasks/",
        "models.py",
    }


def test_readme_architecture_map_matches_the_tree():
    named = map_entries((ROOT / "README.md").read_text())
    tree = tree_entries()
    assert not tree - named, f"modules missing from the README's map: {sorted(tree - named)}"
    assert not named - tree, f"the README's map names what does not exist: {sorted(named - tree)}"
