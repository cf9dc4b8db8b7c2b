"""The docker backend keeps the native backend's promises, on a real engine.

SIGINT, SIGTERM and SIGKILL of `make e2e` and of pytest leave no containers, networks or volumes
once `reap` has run; a container killed mid-run fails the run and shows its log tail; two
checkouts on their own ports run side by side. Port conflicts and the next run after a kill are
in tests/integration/test_docker_lifecycle.py. The developer's 5432/6379 are checked untouched
by the session fixture (conftest).
"""

from __future__ import annotations

import contextlib
import random
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import soak_trials
from rel_docker import DockerSandbox, container_id, require_docker
from rel_interrupt import Trial, interrupt, make_e2e_argv
from rel_sandbox import FAST_E2E, start_payload

FAIL_WITHIN = 60.0  # seconds from a kill or freeze to the end of the run, teardown included


@pytest.fixture
def make_docker_sandbox() -> Iterator[Callable[[str], DockerSandbox]]:
    """Make docker sandboxes (own ports and compose project); all are destroyed afterwards."""
    require_docker()
    made: list[DockerSandbox] = []

    def make(tag: str = "sbx") -> DockerSandbox:
        made.append(DockerSandbox.make(tag))
        return made[-1]

    yield make
    for box in made:
        box.destroy()


def _report(trials: list[Trial]) -> str:
    bad = [t for t in trials if not t.ok]
    return f"{len(bad)} of {len(trials)} interrupt trials left something:\n\n" + "\n\n".join(
        t.describe() for t in bad
    )


def _trials(
    make: Callable[[str], DockerSandbox],
    plans: list[tuple[str, str, float, str]],
    parallel: int,
) -> tuple[list[Trial], dict[str, DockerSandbox]]:
    boxes: dict[str, DockerSandbox] = {}

    def one(plan: tuple[str, str, float, str]) -> Trial:
        sig, target, delay, runner = plan
        box = boxes[f"{sig}-{target}-{runner}-{len(boxes)}"] = make(sig.lower())
        argv = make_e2e_argv() if runner == "make" else box.e2e_argv(suite=FAST_E2E)
        assert argv is not None
        # SIGKILL counts from "containers up", so it lands while they run: the orphaning case.
        return interrupt(box, argv, sig, target, delay, after_services=sig == "SIGKILL")

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, plans)), boxes


@pytest.mark.timeout(600)
def test_each_signal_once_leaves_nothing_on_the_engine(
    make_docker_sandbox: Callable[[str], DockerSandbox],
) -> None:
    """SIGINT (pytest), SIGTERM (make e2e) and SIGKILL (pytest controller), once each; the
    next run's side is in tests/integration/test_docker_lifecycle.py."""
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    plans = [
        ("SIGINT", "group", round(rng.uniform(0.3, 10.0), 2), "pytest"),
        ("SIGTERM", "group", round(rng.uniform(0.3, 10.0), 2), "make"),
        ("SIGKILL", "controller", round(rng.uniform(0.3, 4.0), 2), "pytest"),
    ]
    trials, _ = _trials(make_docker_sandbox, plans, parallel=3)
    assert all(t.ok for t in trials), f"seed {seed}: " + _report(trials)


def _stop_mid_suite(
    box: DockerSandbox, tmp_path: Path, service: str, how: str
) -> tuple[int | None, float, str]:
    """Start the payload on containers, then `docker kill` or `docker pause` one of them;
    return (exit code or None, seconds from then to the end, the run's output)."""
    run, _ = start_payload(box, tmp_path, tests=400)  # however late it lands: mid-suite
    victim = container_id(box.project, service)
    assert victim is not None
    subprocess.run(["docker", how, victim], capture_output=True, check=True, timeout=30)
    stopped = time.monotonic()
    try:
        code = run.wait(FAIL_WITHIN)
    finally:
        if how == "pause":
            with contextlib.suppress(subprocess.SubprocessError):
                subprocess.run(["docker", "unpause", victim], capture_output=True, timeout=30)
    took = time.monotonic() - stopped
    if code is None:
        run.kill_all()
    out = run.output()
    for kept in re.findall(r"log kept at (\S+)", out):
        shutil.rmtree(Path(kept).parent, ignore_errors=True)
    return code, took, out


def _promises_kept(code: int | None, out: str, name: str) -> None:
    assert code is not None, f"still running {FAIL_WITHIN:g} s later\n{out[-3000:]}"
    assert code != 0, out[-3000:]
    # The breaker names the service and since when; the log tail is shown and the log kept.
    assert f"{name} at 127.0.0.1:" in out, out[-3000:]
    assert "stopped answering at" in out, out[-3000:]
    assert "log kept at" in out, out[-3000:]


@pytest.mark.timeout(300)
def test_killed_container_fails_the_run_fast_with_its_log_tail(
    make_docker_sandbox: Callable[[str], DockerSandbox], tmp_path: Path
) -> None:
    box = make_docker_sandbox("killed")
    code, took, out = _stop_mid_suite(box, tmp_path, "postgres-e2e", "kill")
    _promises_kept(code, out, "PostgreSQL")
    assert "postgres log tail:" in out, out[-3000:]
    assert "database system is ready to accept connections" in out  # the container's own log
    print(f"container killed: run ended {took:.1f} s later with exit {code}")
    assert box.wait_no_leftovers() == []


@pytest.mark.soak
@pytest.mark.timeout(5400)
@pytest.mark.parametrize("runner", ["pytest", "make"])
def test_many_interrupts_at_random_points(
    make_docker_sandbox: Callable[[str], DockerSandbox], runner: str
) -> None:
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    per = soak_trials(10)
    cases = [("SIGINT", "group"), ("SIGTERM", "group"), ("SIGKILL", "controller")]
    cases += [("SIGKILL", "group"), ("SIGINT", "controller"), ("SIGTERM", "controller")]
    plans = [
        (sig, target, round(rng.uniform(0.2, 20.0), 2), runner)
        for sig, target in cases[:3]
        for _ in range(per)
    ]
    plans += [
        (sig, target, round(rng.uniform(0.2, 20.0), 2), runner)
        for sig, target in cases[3:]
        for _ in range(max(1, per // 3))
    ]
    rng.shuffle(plans)

    def each(plan: tuple[str, str, float, str]) -> Trial:
        box = make_docker_sandbox(plan[0].lower())
        try:
            return _trials(lambda tag: box, [plan], parallel=1)[0][0]
        finally:
            box.destroy()  # now: 30+ trials' containers must not pile up

    with ThreadPoolExecutor(2) as pool:
        trials = list(pool.map(each, plans))
    print(f"docker interrupt trials ({runner}, seed {seed}): {len(trials)}")
    assert all(t.ok for t in trials), f"seed {seed}: " + _report(trials)


@pytest.mark.soak
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("service", "name"), [("postgres-e2e", "PostgreSQL"), ("redis-e2e", "Valkey")]
)
def test_frozen_container_ends_the_run_within_a_minute(
    make_docker_sandbox: Callable[[str], DockerSandbox], tmp_path: Path, service: str, name: str
) -> None:
    box = make_docker_sandbox("frozen")
    code, took, out = _stop_mid_suite(box, tmp_path, service, "pause")
    _promises_kept(code, out, name)
    print(f"{service} paused: run ended {took:.1f} s later with exit {code}")
    assert box.wait_no_leftovers(30) == []


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_own_ports_run_side_by_side(
    make_docker_sandbox: Callable[[str], DockerSandbox],
) -> None:
    boxes = [make_docker_sandbox("a"), make_docker_sandbox("b")]
    runs = [box.start(box.e2e_argv(suite=FAST_E2E), name="side") for box in boxes]
    codes = [run.wait(400) for run in runs]
    assert codes == [0, 0], "\n".join(run.output()[-2000:] for run in runs)
    for box in boxes:
        assert box.wait_no_leftovers() == []
