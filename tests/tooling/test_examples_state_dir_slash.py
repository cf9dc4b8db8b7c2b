"""scripts/examples.sh puts each app's state dir next to an exported E2E_STATE_DIR, never inside
it: with a trailing slash it made <it>/-example-<app>, which opsdesk's `down` removed under the
app's running servers. A stub pytest records the state dir each app would get."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("exported", ["/dev/shm/opsdesk-state", "/dev/shm/opsdesk-state//"])
def test_each_app_gets_a_sibling_state_dir(tmp_path: Path, exported: str) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # this venv's, not a copy
    python.chmod(0o755)
    seen = tmp_path / "seen"
    pytest_stub = venv / "bin" / "pytest"
    pytest_stub.write_text(f'#!/bin/sh\necho "$E2E_STATE_DIR" >> {seen}\n')
    pytest_stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "E2E_"))}
    env.update(E2E_VENV=str(venv), E2E_STATE_DIR=exported, PYTEST_ARGS="")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "examples.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen.read_text().split() == [
        "/dev/shm/opsdesk-state-example-inventory",
        "/dev/shm/opsdesk-state-example-bookings",
    ]
