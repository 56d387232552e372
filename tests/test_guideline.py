"""docs/guideline.md says only what committed tables show: every "X ± Y" it quotes is in one of
them, every file it cites exists, and each section cites at least one committed table."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDELINE = ROOT / "docs" / "guideline.md"
TABLE_DIRS = ("docs/studies/", "docs/review/", "benchmarks/results/")
"""Where the tables the guideline may quote live (repository-relative)."""
SPREAD = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)(?![\d.]\d)")
"""A mean ± std figure, e.g. ``91.5 ± 0.8`` (also inside ``1.98 ± 0.01x``)."""
CITED = (".md", ".csv", ".json", ".png", ".yaml")


def committed(paths: list[Path]) -> set[Path]:
    """Which of ``paths`` git tracks (all of them when this is not a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--", *map(str, paths)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return set(paths)
    return {(ROOT / line).resolve() for line in out.splitlines()}


def tables() -> list[Path]:
    files = [*ROOT.glob("docs/**/*.md"), *ROOT.glob("benchmarks/results/*.md")]
    files = [f.resolve() for f in files if f.resolve() != GUIDELINE.resolve()]
    tracked = committed(files)
    return [f for f in files if f in tracked]


def sections() -> dict[str, str]:
    """The guideline's ``## `` sections by heading."""
    parts = GUIDELINE.read_text(encoding="utf-8").split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part for part in parts}


def cited_paths(text: str) -> list[str]:
    """File paths a text cites: link targets and code spans naming a file in a folder."""
    spans = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"`([^`\s]+)`", text)
    return [s for s in spans if s.endswith(CITED) and "/" in s and not any(c in s for c in "*<>")]


def resolve(cited: str) -> Path | None:
    """A cited path, relative to docs/ (links) or to the repository root; None if neither."""
    for base in (GUIDELINE.parent, ROOT):
        path = (base / cited).resolve()
        if path.is_file():
            return path
    return None


def test_every_spread_quoted_is_in_a_committed_table():
    quoted = set(SPREAD.findall(GUIDELINE.read_text(encoding="utf-8")))
    assert len(quoted) > 20
    in_tables: set[tuple[str, str]] = set()
    for table in tables():
        in_tables |= set(SPREAD.findall(table.read_text(encoding="utf-8")))
    missing = sorted(f"{mean} ± {std}" for mean, std in quoted - in_tables)
    assert not missing, f"docs/guideline.md quotes figures no committed table has: {missing}"


def test_every_cited_file_exists():
    text = GUIDELINE.read_text(encoding="utf-8")
    missing = [p for p in cited_paths(text) if resolve(p) is None]
    assert not missing, f"docs/guideline.md cites files that do not exist: {missing}"


@pytest.mark.parametrize("heading", list(sections()))
def test_each_section_cites_a_committed_table(heading):
    found = [resolve(p) for p in cited_paths(sections()[heading])]
    found = [p for p in found if p is not None]
    tracked = committed(found)
    table_files = [
        p for p in found
        if p in tracked and p.relative_to(ROOT.resolve()).as_posix().startswith(TABLE_DIRS)
    ]  # fmt: skip
    assert table_files, f"section '{heading}' cites no committed table ({', '.join(TABLE_DIRS)})"


def test_the_spread_rule_is_stated():
    text = GUIDELINE.read_text(encoding="utf-8")
    assert "smaller than the spread over seeds is not a finding" in text
