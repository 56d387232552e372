"""Nothing skips in CI (CI=true): a missing package or data folder fails the test that needs
it, and no test file sidesteps that with ``pytest.importorskip``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import needs_data, require

MISSING_MODULE = "kdformer_no_such_module_for_tests"
MISSING_DATA = Path("/nonexistent/kdformer-shared-data")


def test_a_missing_package_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"{MISSING_MODULE} is not installed.*CI=true"):
        require(MISSING_MODULE, "an extra")


def test_a_missing_package_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING_MODULE} is not installed"):
        require(MISSING_MODULE, "an extra")


def test_an_installed_package_is_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require("json").dumps([1]) == "[1]"


def test_missing_data_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    mark = needs_data(MISSING_DATA)
    assert mark.name == "skipif" and mark.args == (False,)  # the test runs, and fails
    monkeypatch.setenv("CI", "")
    assert needs_data(MISSING_DATA).args == (True,)
    assert str(MISSING_DATA) in needs_data(MISSING_DATA).kwargs["reason"]


def test_no_test_file_skips_on_its_own():
    """Tests import extras through ``require`` and mark data through ``needs_data`` (both fail
    in CI); a bare ``pytest.importorskip`` or ``pytest.skip`` would skip there too."""
    here = Path(__file__).parent
    offenders = []
    for path in sorted(here.glob("*.py")):
        if path.name in {"conftest.py", Path(__file__).name}:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bimportorskip\b|\bpytest\.skip\(", line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "use conftest.require / needs_data instead:\n" + "\n".join(offenders)
