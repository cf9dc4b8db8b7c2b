"""A service dies mid-suite: the rest fails fast, teardown completes, exit != 0 (a frozen one:
test_lifecycle_runs.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rel_sandbox import Sandbox, server_pids, start_payload

FAIL_WITHIN = 60.0  # seconds from the kill to the end of the run, teardown included


def _start_payload(sandbox: Sandbox, tmp_path: Path, tests: int = 16) -> tuple[object, Path]:
    return start_payload(sandbox, tmp_path, tests)


def _kill_mid_suite(sandbox: Sandbox, tmp_path: Path, service: str) -> str:
    """Kill one server mid-suite; return what went wrong ('' when all promises held)."""
    run, progress = _start_payload(sandbox, tmp_path)
    pid = server_pids(sandbox.state_dir)[service]
    os.killpg(pid, signal.SIGKILL)  # the server and its children, like an OOM kill
    killed = time.monotonic()
    done_before = len(list(progress.iterdir()))
    code = run.wait(FAIL_WITHIN)  # type: ignore[attr-defined]
    took = time.monotonic() - killed
    out = run.output()  # type: ignore[attr-defined]
    ran_after = len(list(progress.iterdir())) - done_before
    reason = "Connection refused" if service == "postgres" else "Error 111"
    problems = [
        f"hung for {FAIL_WITHIN}s" if code is None else "",
        "exit code 0" if code == 0 else "",
        f"{ran_after} tests passed after it died" if ran_after > 2 else "",
        "no clear error"
        if not (reason in out or "ConnectionError" in out or "OperationalError" in out)
        else "",
        f"left {sandbox.wait_no_leftovers(10)}" if sandbox.leftovers() else "",
    ]
    print(f"{service} killed: run ended {took:.1f}s later with exit {code}")
    found = [p for p in problems if p]
    return f"{service} killed: {', '.join(found)}\n{out[-2000:]}" if found else ""


@pytest.mark.timeout(300)
def test_killed_service_fails_the_rest_fast(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    services = ("postgres", "valkey")
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda name: _kill_mid_suite(make_sandbox(name), tmp_path / name, name), services
            )
        )
    assert not any(results), "\n\n".join(r for r in results if r)
