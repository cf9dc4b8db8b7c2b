"""testbed's sdist runs its tests with testbed/sdist/pytest.ini (carried as the sdist's
pytest.ini); in the repository the root pyproject.toml sets them. The two must not drift apart:
a setting added here and not there would make the sdist's run differ from ours."""

from __future__ import annotations

import configparser
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDIST_INI = ROOT / "testbed" / "sdist" / "pytest.ini"

# The repository's own, for its shared E2E instance: the sdist's runs name their own.
REPOSITORY_ONLY = {"e2e_project_name"}


def as_words(value: object) -> list[str]:
    """An ini value as pytest reads it: a TOML list, or INI text split into words or lines."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    return [line.strip() for line in text.splitlines() if line.strip()] if "\n" in text else [text]


def test_the_sdist_runs_testbeds_tests_with_the_repositorys_settings() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SDIST_INI)
    sdist = dict(parser.items("pytest"))

    assert set(sdist) == set(root) - REPOSITORY_ONLY
    # Paths are relative to the ini file: the root's testbed/tests is the sdist's tests.
    assert root["pythonpath"] == ["testbed/tests"]
    assert sdist.pop("pythonpath") == "tests"
    assert shlex.split(sdist.pop("addopts")) == root["addopts"]
    assert int(sdist.pop("timeout")) == root["timeout"]
    for key, value in sdist.items():
        assert as_words(value) == as_words(root[key]), key


def test_the_sdist_test_group_installs_what_its_asyncio_tests_import() -> None:
    """SQLAlchemy 2.1 installs no greenlet: the sdist's tests that import sqlalchemy.ext.asyncio
    fail to import in a fresh environment unless its test group asks for sqlalchemy[asyncio]."""
    tests = ROOT / "testbed" / "tests"
    importers = [
        path.relative_to(tests)
        for path in sorted(tests.rglob("*.py"))
        if "sqlalchemy.ext.asyncio" in path.read_text()
    ]
    assert importers, "no test imports sqlalchemy.ext.asyncio any more: drop this check"
    project = tomllib.loads((ROOT / "testbed" / "pyproject.toml").read_text())
    group = [req.replace(" ", "") for req in project["dependency-groups"]["test"]]
    assert any(req.startswith("sqlalchemy[asyncio]") for req in group), importers
