"""The pytest ini file's e2e_* keys, for `python -m testbed` (pytest reads the file itself)."""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

from testbed.config import OPTIONS
from testbed.errors import UsageError

_INI_FILES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


def _read_ini(path: Path) -> dict[str, str] | None:
    """The pytest section of one file, or None when the file has none."""
    if path.name == "pyproject.toml":
        try:
            table = tomllib.loads(path.read_text()).get("tool", {}).get("pytest", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        section = table.get("ini_options") if isinstance(table, dict) else None
        return None if section is None else {k: str(v) for k, v in section.items()}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    name = "tool:pytest" if path.name == "setup.cfg" else "pytest"
    if parser.has_section(name):
        return dict(parser.items(name))
    return {} if path.name in ("pytest.ini", ".pytest.ini") else None


def _pointer(path: Path) -> Path | None:
    """A root pyproject.toml's `[tool.testbed] pytest_ini = "backend/pyproject.toml"`: where a
    repository whose suites live below its root keeps its e2e_* keys."""
    try:
        table = tomllib.loads(path.read_text()).get("tool", {}).get("testbed", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    target = table.get("pytest_ini") if isinstance(table, dict) else None
    if target is None:
        return None
    found = (path.parent / str(target)).resolve()
    if not found.is_file():
        raise UsageError(f"{path}: [tool.testbed] pytest_ini = {target!r}: no such file")
    return found


def find_ini(start: Path) -> Path | None:
    """The pytest ini file pytest would use from `start`: the first, walking up, with a pytest
    section; but a pyproject.toml's [tool.testbed] pytest_ini names it instead (a repository
    whose E2E suite lives below its root: `python -m testbed` then works from the root too)."""
    for base in (start, *start.parents):
        for name in _INI_FILES:
            path = base / name
            if not path.is_file():
                continue
            if name == "pyproject.toml" and (pointed := _pointer(path)) is not None:
                return pointed  # the repository says where its E2E suite's settings are
            if _read_ini(path) is not None:
                return path
    return None


def ini_values(path: Path | None) -> dict[str, object]:
    """testbed's settings (by option name) from a pytest ini file's e2e_* keys."""
    if path is None:
        return {}
    section = _read_ini(path)
    if section is None:
        raise UsageError(f"{path} has no pytest section ([tool.pytest.ini_options] or [pytest])")
    by_ini = {opt.ini: opt.name for opt in OPTIONS}
    return {by_ini[key]: value for key, value in section.items() if key in by_ini and value}
