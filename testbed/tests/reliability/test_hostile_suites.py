"""A suite that patches `socket` in every test (an autouse fixture raising a non-OSError, as
httpretty does), run with warnings as errors: testbed's probes and claim renewals never go
through the patched module, so every test passes at -n 0 and -n 2, and a frozen service still
ends the run within a minute (the breaker's monitor and its connection cutting survive)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest
from rel_sandbox import PYTEST, Run, Sandbox, payload_suite, server_pids, wait_for

FROZEN_WITHIN = 60.0
SUMMARY = re.compile(r"^(=+ )?\d+ (passed|failed|error).* in [\d.]+s", re.MULTILINE)


def _run(box: Sandbox, tmp: Path, name: str, workers: str, *, tests: int) -> tuple[Run, Path]:
    progress = tmp / f"progress-{name}"
    progress.mkdir(parents=True)
    suite = payload_suite(tmp / name, "hostile_suite.py")
    env = box.env(REL_PROGRESS=str(progress), REL_TESTS=str(tests), REL_SLEEP="0.3")
    argv = [str(PYTEST), str(suite), "-n", workers, "-p", "no:randomly", "-q", "-W", "error"]
    return box.start([*argv, "--timeout", "600"], env=env, cwd=tmp, name=name), progress


@pytest.mark.timeout(400)
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_socket_patching_suite_passes_and_keeps_fail_fast(
    sandbox: Sandbox, tmp_path: Path, workers: str
) -> None:
    clean, _ = _run(sandbox, tmp_path, "clean", workers, tests=12)
    code = clean.wait(300)
    assert code == 0, clean.output()[-3000:]
    assert "12 passed" in clean.output()

    frozen, progress = _run(sandbox, tmp_path, "frozen", workers, tests=400)
    assert wait_for(lambda: len(list(progress.iterdir())) >= 4, 120), frozen.output()[-3000:]
    pid = server_pids(sandbox.state_dir)["postgres"]
    os.killpg(pid, signal.SIGSTOP)
    began = time.monotonic()
    try:
        code = frozen.wait(FROZEN_WITHIN)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)
    out = frozen.output()
    if code is None:
        frozen.kill_all()
    assert code not in (None, 0), f"exit {code} {time.monotonic() - began:.0f} s on:\n{out[-3000:]}"
    assert "PostgreSQL at 127.0.0.1:" in out, out[-3000:]
    assert "stopped answering at" in out, out[-3000:]
    assert "UnmockedError" not in out, out[-3000:]
    assert SUMMARY.search(out), out[-3000:]
