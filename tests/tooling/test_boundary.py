"""`make lint`'s boundary check: testbed imports and names nothing of the app under test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "testbed" / "src", tmp_path / "testbed" / "src")
    shutil.copytree(ROOT / "backend" / "src", tmp_path / "backend" / "src")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "lint.sh"), "boundary"],
        env={**os.environ, "LINT_ROOT": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_real_tree_keeps_the_boundary(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("module", "line", "needle"),
    [
        ("isolation/schema.py", "from opsdesk import db\n", "testbed.isolation.schema -> opsdesk"),
        (
            "isolation/pubsub.py",
            "import importlib\nimportlib.import_module('x')  # opsdesk.x\n",
            "opsdesk",
        ),
        ("config/__init__.py", "APP = 'OpsDesk'\n", "must not name opsdesk"),
        ("services/native.py", "# stop them with `make down`\n", "the adopter's words"),
    ],
)
def test_an_import_or_a_mention_fails(tmp_path: Path, module: str, line: str, needle: str) -> None:
    root = _copy(tmp_path)
    path = root / "testbed" / "src" / "testbed" / module
    path.write_text(path.read_text() + line)
    result = _lint(root)
    assert result.returncode == 1
    assert needle in result.stdout
