"""`make example` with E2E_STATE_DIR exported (as CI or a developer's shell does) while opsdesk's
services run in that state dir: the example apps, other projects, get state dirs of their own
next to it, pass, and leave opsdesk's services running (they were refused there before)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.config import default_state_root

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    """A free port below the ephemeral range, never the dev or default E2E ports."""
    for port in range(22000 + uuid.uuid4().int % 8000, 32000):
        if port in (5432, 5433, 6379, 6380):
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 22000-31999")


@pytest.fixture
def outer_env() -> Iterator[dict[str, str]]:
    """The environment of a shell that exported opsdesk's ports and state dir, with opsdesk's
    services up there (`python -m testbed up`); taken down afterwards."""
    state = default_state_root() / f"opsdesk-e2e-inner-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "E2E_"))}
    for name in ("VENV", "JUNIT_DIR", "MAKEFLAGS", "MFLAGS", "CI", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    pg = _free_port()
    env.update(
        E2E_BACKEND="native",
        E2E_PG_PORT=str(pg),
        E2E_REDIS_PORT=str(next(p for p in iter(_free_port, None) if p != pg)),
        E2E_STATE_DIR=str(state),
        E2E_WAIT_TIMEOUT="60",
    )
    up = _testbed(env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield env
    finally:
        _testbed(env, "down")
        for app in ("inventory", "bookings"):  # what a failed example run may have left
            sibling = dict(env, E2E_STATE_DIR=f"{state}-example-{app}")
            _testbed(sibling, "down", cwd=ROOT / "examples" / app)


def _testbed(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testbed", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _record(state: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((Path(state) / "state.json").read_text())
    return data


def test_examples_get_state_dirs_of_their_own_and_leave_the_outer_services_running(
    outer_env: dict[str, str],
) -> None:
    state = outer_env["E2E_STATE_DIR"]
    before = _record(state)
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), "example", "N=1"],
        env=outer_env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "belongs to project" not in out
    # opsdesk's services: the same processes, the same leases (the user's), and they answer.
    after = _record(state)
    assert after["processes"] == before["processes"]
    assert after["leases"] == before["leases"]
    status = _testbed(outer_env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    # Each app stopped its own services and removed its state dir next to the exported one.
    for app in ("inventory", "bookings"):
        assert not Path(f"{state}-example-{app}").exists()
