"""A run interrupted while its services start leaves no server behind.

The moment that matters is after Valkey answered and before PostgreSQL did: the record then holds
Valkey as it was spawned, and the cleanup (the run's own on SIGINT or SIGTERM, `reap` after a
SIGKILL) must still know that process as ours, whatever Valkey has done to itself since.
"""

from __future__ import annotations

import signal
import socket

import psutil
import pytest
from rel_sandbox import PYTHON, Run, Sandbox, wait_for

pytestmark = pytest.mark.timeout(300)

ATTEMPTS = 3  # a loaded machine may let the start finish before the signal lands: try again


def _listens(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port (a connect: never a bind,
    which could take the port from the server about to bind it)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _valkey_processes(box: Sandbox) -> list[str]:
    """Live valkey-server processes whose working directory is in the sandbox (even deleted)."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cwd"]):
        cwd = proc.info["cwd"] or ""
        if proc.info["name"] == "valkey-server" and cwd.startswith(str(box.root)):
            found.append(f"pid {proc.info['pid']} in {cwd}")
    return found


def _interrupt_mid_start(box: Sandbox, sig: signal.Signals) -> Run:
    """Start `up --foreground`, signal its group once Valkey listens, clean up as the user
    would (SIGKILL: `reap`); return the run."""
    run = box.start([str(PYTHON), "-m", "testbed", "up", "--foreground"], name="up")
    # Valkey listens well before PostgreSQL answers: the signal lands between the two.
    listening = wait_for(
        lambda: _listens(box.redis_port) or run.proc.poll() is not None, 120, step=0.002
    )
    run.signal_group(sig)
    assert listening, run.output()
    assert run.wait(60) is not None, f"`up` did not end after {sig.name}:\n{run.output()}"
    if sig == signal.SIGKILL:
        code, reaped = box.testbed("reap")  # the dead run's lease, then its servers
        assert code == 0, reaped
    return run


# SIGTERM as `up --help` promises ("Ctrl-C or SIGTERM takes the services down"): its default
# action once killed `up` mid-start and left Valkey running for `reap`.
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"]
)
def test_interrupt_after_valkey_spawned_stops_it(sandbox: Sandbox, sig: signal.Signals) -> None:
    for _ in range(ATTEMPTS):
        run = _interrupt_mid_start(sandbox, sig)
        if "E2E services started" not in run.output():
            break
        # The start finished before the signal landed: that trial tested nothing, try again.
    else:
        pytest.fail(f"the signal never landed mid-start in {ATTEMPTS} attempts")
    left = wait_for(lambda: not _valkey_processes(sandbox), 15)
    assert left, (
        f"left running after {sig.name} and cleanup: {_valkey_processes(sandbox)}\n"
        f"--- `up` said ---\n{run.output()}"
    )
    assert sandbox.wait_no_leftovers() == []
