"""scripts/deps.sh refuses a bad PYTHON or VENV with one clear line, before touching anything.

Each test runs the real script; none gets as far as creating a venv (see
tests/integration/test_deps_rebuild.py for the rebuilds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_deps(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a deps.sh with PYTHON/VENV from env only."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VENV", "UV_PYTHON")}
    return subprocess.run(
        [str(script)], capture_output=True, text=True, env=base | env, timeout=60, check=False
    )


def checkout_with(tmp: Path, requires: str) -> Path:
    """A minimal checkout copy (scripts/deps.sh + pyproject.toml) with requires-python."""
    (tmp / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "deps.sh", tmp / "scripts" / "deps.sh")
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in text, "update this test's anchor"
    (tmp / "pyproject.toml").write_text(
        text.replace('requires-python = ">=3.11"', f'requires-python = "{requires}"')
    )
    return tmp / "scripts" / "deps.sh"


def test_an_unknown_python_is_named_with_what_to_set(tmp_path: Path) -> None:
    """PYTHON that is not on PATH: exit 2, naming it and the required versions."""
    venv = tmp_path / "venv"
    proc = run_deps(ROOT / "scripts" / "deps.sh", PYTHON="no-such-python3", VENV=str(venv))
    assert proc.returncode == 2
    assert "PYTHON=no-such-python3" in proc.stderr
    assert ">=3.11" in proc.stderr
    assert not venv.exists()


def test_a_python_outside_requires_python_is_refused(tmp_path: Path) -> None:
    """An interpreter that fails requires-python: exit 2 with its version, no venv made."""
    script = checkout_with(tmp_path, ">=3.11,<3.11")
    venv = tmp_path / "venv"
    proc = run_deps(script, PYTHON=sys.executable, VENV=str(venv))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    version = ".".join(map(str, sys.version_info[:3]))
    assert f"is Python {version}" in proc.stderr
    assert "requires Python >=3.11,<3.11" in proc.stderr
    assert not venv.exists()


def test_the_requires_python_check_accepts_this_interpreter(tmp_path: Path) -> None:
    """Control: the same copy with a spec this Python meets gets past the check."""
    script = checkout_with(tmp_path, f">=3.11,!=3.{sys.version_info[1] + 1}")
    venv = tmp_path / "venv"
    venv.mkdir()  # not a venv: the script must stop there, after the version check
    proc = run_deps(script, PYTHON=sys.executable, VENV=str(venv))
    assert "requires Python" not in proc.stderr
    assert "is not a virtualenv" in proc.stderr


def test_a_directory_that_is_not_a_venv_is_never_removed(tmp_path: Path) -> None:
    """VENV pointing at a directory without pyvenv.cfg: refused, and its files stay."""
    venv = tmp_path / "mine"
    (venv / "bin").mkdir(parents=True)
    (venv / "notes.txt").write_text("keep me")
    proc = run_deps(ROOT / "scripts" / "deps.sh", PYTHON=sys.executable, VENV=str(venv))
    assert proc.returncode == 2
    assert "is not a virtualenv" in proc.stderr
    assert (venv / "notes.txt").read_text() == "keep me"
