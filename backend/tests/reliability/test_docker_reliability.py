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
import secrets
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

FAIL_WITHIN = 60.0  # seconds from the kill to the end of the run, teardown included


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


@pytest.mark.timeout(300)
def test_killed_container_fails_the_run_fast_with_its_log_tail(
    make_docker_sandbox: Callable[[str], DockerSandbox], tmp_path: Path
) -> None:
    box = make_docker_sandbox("killed")
    run, progress = start_payload(box, tmp_path, tests=10)
    victim = container_id(box.project, "postgres-e2e")
    assert victim is not None
    subprocess.run(["docker", "kill", victim], capture_output=True, check=True, timeout=30)
    killed = time.monotonic()
    done_before = len(list(progress.iterdir()))
    code = run.wait(FAIL_WITHIN)
    took = time.monotonic() - killed
    out = run.output()
    assert code is not None, f"hung for {FAIL_WITHIN:g} s after the container was killed\n{out}"
    assert code != 0, out[-3000:]
    assert len(list(progress.iterdir())) - done_before <= 2, "tests passed after it died"
    assert "OperationalError" in out or "Connection refused" in out, out[-3000:]
    # The dead container's log tail is in the run's output, before `down` removed it.
    assert f"{box.project}-postgres-e2e-1 is exited" in out, out[-3000:]
    assert "its log ends with:" in out
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
@pytest.mark.timeout(400)
@pytest.mark.parametrize("service", ["postgres-e2e", "redis-e2e"])
def test_frozen_container_is_bounded(
    make_docker_sandbox: Callable[[str], DockerSandbox], tmp_path: Path, service: str
) -> None:
    box = make_docker_sandbox("frozen")
    run, _ = start_payload(box, tmp_path)
    victim = container_id(box.project, service)
    assert victim is not None
    subprocess.run(["docker", "pause", victim], capture_output=True, check=True, timeout=30)
    try:
        code = run.wait(240)
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["docker", "unpause", victim], capture_output=True, timeout=30)
    if code is None:
        run.kill_all()
        pytest.xfail(
            f"BUG-R2b (as on native, test_service_death.py): with {service} frozen the run is "
            f"still going after 240 s (each query waits on the frozen server)\n"
            f"{run.output()[-1500:]}"
        )
    assert code != 0, run.output()[-3000:]
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
