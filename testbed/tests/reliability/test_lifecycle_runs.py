"""Runs that overlap, and services that freeze or die under a run (docs/reliability.md lists
each case): never a wrong result, a bounded end, and the cause in the output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rel_sandbox import PYTEST, Run, Sandbox, payload_suite, server_pids, wait_for

FROZEN_WITHIN = 60.0  # seconds from a SIGSTOP to the end of the run, teardown included
SUMMARY = re.compile(r"^(=+ )?\d+ (passed|failed|error).* in [\d.]+s", re.MULTILINE)


def _payload_run(
    box: Sandbox, tmp: Path, name: str, *, tests: int, sleep: float = 0.5, **env: str
) -> tuple[Run, Path]:
    progress = tmp / f"progress-{name}"
    progress.mkdir(parents=True)
    suite = payload_suite(
        tmp / name, "shared_suite.py" if name.startswith("shared") else "steady_suite.py"
    )
    run = box.start(
        [str(PYTEST), str(suite), "-n", "2", "-p", "no:randomly", "-q", "--timeout", "600"],
        env=box.env(REL_PROGRESS=str(progress), REL_TESTS=str(tests), REL_SLEEP=str(sleep), **env),
        cwd=tmp / name,
        name=name,
    )
    return run, progress


def _started(progress: Path, count: int) -> Callable[[], bool]:
    return lambda: len(list(progress.iterdir())) >= count


# 4 ------------------------------------------------------------------------------------------
def _overlap_on_a_runs_services(box: Sandbox, tmp: Path) -> str:
    """The first run starts the services and ends while the second still uses them."""
    first, progress = _payload_run(box, tmp, "shared-first", tests=16)
    if not wait_for(_started(progress, 2), 120):
        return f"the first run did not start:\n{first.output()[-2000:]}"
    second, _ = _payload_run(box, tmp, "shared-second", tests=40)
    codes = [first.wait(300), second.wait(300)]
    outs = [first.output(), second.output()]
    if codes != [0, 0]:
        return f"exit codes {codes}:\n{outs[0][-1500:]}\n---\n{outs[1][-2500:]}"
    left = box.wait_no_leftovers(15)  # the last run's end stopped them
    return f"left after both runs: {left}" if left else ""


def _overlap_on_make_up(box: Sandbox, tmp: Path) -> str:
    """Two runs at once on `make up` services: each gets its own Valkey databases."""
    code, out = box.testbed("up")
    if code != 0:
        return out
    runs = [_payload_run(box, tmp, f"shared-{i}", tests=16)[0] for i in range(2)]
    codes = [run.wait(300) for run in runs]
    if codes != [0, 0]:
        return f"exit codes {codes}:\n" + "\n---\n".join(r.output()[-2000:] for r in runs)
    code, out = box.testbed("status")
    return "" if code == 0 else f"the user's services did not survive the runs:\n{out}"


@pytest.mark.timeout(600)
def test_case04_two_runs_at_once_in_one_checkout_both_pass(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = [
            pool.submit(_overlap_on_a_runs_services, make_sandbox("overlap"), tmp_path / "a"),
            pool.submit(_overlap_on_make_up, make_sandbox("makeup"), tmp_path / "b"),
        ]
        problems = [f.result() for f in results]
    assert not any(problems), "\n\n".join(p for p in problems if p)


# 7 ------------------------------------------------------------------------------------------
def _freeze_mid_suite(box: Sandbox, tmp: Path, service: str) -> str:
    # 400 tests (2 minutes of them): however late the freeze lands, most still need the service.
    run, progress = _payload_run(box, tmp, f"steady-{service}", tests=400, sleep=0.3)
    if not wait_for(_started(progress, 4), 120):
        return f"{service}: the run did not start:\n{run.output()[-2000:]}"
    pid = server_pids(box.state_dir)[service]
    os.killpg(pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        code = run.wait(FROZEN_WITHIN)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)
    took = time.monotonic() - frozen
    out = run.output()
    name = "PostgreSQL" if service == "postgres" else "Valkey"
    problems = [
        f"still running {FROZEN_WITHIN:g} s after the freeze" if code is None else "",
        "exit code 0" if code == 0 else "",
        "" if f"{name} at 127.0.0.1:" in out and "stopped answering at" in out else "no cause",
        "" if SUMMARY.search(out) else "no summary line",
    ]
    if code is None:
        run.kill_all()
    for kept in re.findall(r"log kept at (\S+)", out):
        shutil.rmtree(Path(kept).parent, ignore_errors=True)
    print(f"{service} frozen: the run ended {took:.1f} s later (exit {code})")
    found = [p for p in problems if p]
    return f"{service}: {', '.join(found)}\n{out[-2500:]}" if found else ""


@pytest.mark.timeout(300)
def test_case07_a_frozen_service_ends_the_run_within_a_minute(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    with ThreadPoolExecutor(2) as pool:
        problems = list(
            pool.map(
                lambda s: _freeze_mid_suite(make_sandbox(s), tmp_path / s, s),
                ("postgres", "valkey"),
            )
        )
    assert not any(problems), "\n\n".join(p for p in problems if p)


# 8 ------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_case08_a_dead_service_shows_its_log_and_keeps_it(sandbox: Sandbox, tmp_path: Path) -> None:
    run, progress = _payload_run(sandbox, tmp_path, "steady-kill", tests=400, sleep=0.3)
    assert wait_for(_started(progress, 4), 120), run.output()
    pid = server_pids(sandbox.state_dir)["postgres"]
    os.kill(pid, signal.SIGKILL)  # the postmaster alone, as the OOM killer would
    code = run.wait(90)
    out = run.output()
    assert code not in (0, None), out[-3000:]
    assert SUMMARY.search(out), f"no pass/fail summary:\n{out[-3000:]}"
    assert "INTERNALERROR" not in out, out[-3000:]
    assert "reap_stale_schemas" not in out, out[-3000:]  # no teardown traceback
    kept = re.search(r"postgres log kept at (\S+)", out)
    assert kept, f"the log's path is not printed:\n{out[-3000:]}"
    log = Path(kept.group(1))
    assert "database system is ready to accept connections" in log.read_text()
    assert "postgres log tail:" in out, out[-3000:]
    log.unlink()
    with contextlib.suppress(OSError):
        log.parent.rmdir()
