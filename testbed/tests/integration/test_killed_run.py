"""BUG-R1 for real: a SIGKILLed run's servers are removed by `reap`, or adopted by the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import low_free_port

from testbed.config import Settings, default_state_root, load_settings
from testbed.services.lifecycle import acquire, ensure_up
from testbed.services.native import NativeBackend
from testbed.services.ports import is_free
from testbed.services.procs import is_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# The child is a test run: ensure_up() as the pytest controller calls it, then it is killed.
CHILD = """
import json, sys, time
from testbed.config import load_settings
from testbed.services.lifecycle import acquire, ensure_up
eps, started = ensure_up(load_settings({}, **json.loads(sys.argv[1])))
print("ready", started, flush=True)
time.sleep(300)
"""


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings overrides of this test's own: native, low random ports, own state dir."""
    name = f"opsdesk-e2e-it-{uuid.uuid4().hex[:8]}"
    pg_port = low_free_port(set())
    return {
        "backend": "native",
        "pg_port": pg_port,
        "redis_port": low_free_port({pg_port}),
        "state_dir": str(default_state_root() / name),
        "project": name,
        "wait_timeout": 20,
    }


@pytest.fixture
def settings(overrides: dict[str, Any]) -> Settings:
    """The same settings in this process (used by the `native` fixture's cleanup too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    return load_settings(env, **overrides)


def run_and_kill(overrides: dict[str, Any], native: NativeBackend) -> dict[str, int]:
    """Start the services from a child run, SIGKILL it once they are up; return server pids."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(overrides)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready True"
        state = json.loads((native.state_dir / "state.json").read_text())
        assert [x["holder"]["pid"] for x in state["leases"]] == [child.pid]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    pids = native.pids()
    assert len(pids) == 2, "the servers must outlive the killed run (they are detached)"
    return pids


def assert_nothing_left(settings: Settings, pids: dict[str, int]) -> None:
    assert not any(is_alive(pid) for pid in pids.values())
    assert not Path(settings.state_dir).exists()
    assert is_free(settings.pg_port)
    assert is_free(settings.redis_port)


def test_reap_removes_a_killed_runs_servers(
    overrides: dict[str, Any], settings: Settings, native: NativeBackend
) -> None:
    pids = run_and_kill(overrides, native)
    assert native.status().orphaned
    removed = native.reap()
    assert removed[0].startswith("lease of dead run pid")
    assert_nothing_left(settings, pids)


def test_next_run_reuses_them_and_its_end_takes_them_down(
    overrides: dict[str, Any], settings: Settings, native: NativeBackend
) -> None:
    pids = run_and_kill(overrides, native)
    hold = acquire(settings)
    assert hold.started is False  # reused, not restarted
    assert native.pids() == pids
    state = json.loads((native.state_dir / "state.json").read_text())
    assert [x["holder"]["pid"] for x in state["leases"]] == [os.getpid()]  # the dead one reaped
    # Used by a live run: reap keeps them; a second lease of ours only reuses them.
    assert native.reap() == []
    second = acquire(settings)
    assert (second.endpoints, second.started) == (hold.endpoints, False)
    assert second.release() is False  # the first lease still holds them
    assert hold.release() is True  # the last lease: stopped
    assert_nothing_left(settings, pids)


def test_user_services_survive_reap(
    overrides: dict[str, Any], settings: Settings, native: NativeBackend
) -> None:
    _, started = ensure_up(settings, owner="user")  # make up
    assert started is True
    pids = native.pids()
    assert native.reap() == []
    assert native.pids() == pids
