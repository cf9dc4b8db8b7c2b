"""SIGINT, SIGTERM and SIGKILL of a running E2E run leave nothing of ours; the next run passes."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import soak_trials
from rel_devsums import dev_fingerprint
from rel_interrupt import Trial, interrupt, make_e2e_argv
from rel_sandbox import FAST_E2E, Sandbox

# (signal, target): SIGINT/SIGTERM to the process group as a terminal does, SIGKILL both to
# the group and to the pytest controller pid alone (workers and servers are then orphans).
CASES = [("SIGINT", "group"), ("SIGTERM", "group"), ("SIGKILL", "controller")]
SOAK_CASES = [*CASES, ("SIGKILL", "group"), ("SIGINT", "controller"), ("SIGTERM", "controller")]
FAST_SECONDS = 10.0  # a -n 2 run of FAST_E2E takes ~10 s here; signal anywhere in it
SUITE_SECONDS = 30.0  # the whole suite, for soak


def _run_trials(
    make_sandbox: Callable[[str], Sandbox],
    plans: list[tuple[str, str, float]],
    argv_for: Callable[[Sandbox], list[str]],
    parallel: int,
) -> list[Trial]:
    def one(plan: tuple[str, str, float]) -> Trial:
        box = make_sandbox(plan[0].lower())
        try:
            return interrupt(box, argv_for(box), *plan)
        finally:
            box.destroy()  # now, not at teardown: orphans of 30+ trials would pile up

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, plans))


def _report(trials: list[Trial]) -> str:
    bad = [t for t in trials if not t.ok]
    return f"{len(bad)} of {len(trials)} interrupt trials left something:\n\n" + "\n\n".join(
        t.describe() for t in bad
    )


@pytest.mark.timeout(600)
def test_each_signal_once_then_next_run_passes(make_sandbox: Callable[[str], Sandbox]) -> None:
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    # SIGKILL is counted from "servers up" so it lands while they run: the case that orphans.
    plans = [
        (sig, target, round(rng.uniform(0.3, 4.0 if sig == "SIGKILL" else FAST_SECONDS), 2))
        for sig, target in CASES
    ]
    boxes: dict[str, Sandbox] = {}

    def one(plan: tuple[str, str, float]) -> Trial:
        box = boxes[plan[0]] = make_sandbox(plan[0].lower())
        return interrupt(
            box, box.e2e_argv(suite=FAST_E2E), *plan, after_services=plan[0] == "SIGKILL"
        )

    with ThreadPoolExecutor(len(plans)) as pool:
        trials = list(pool.map(one, plans))
    assert all(t.ok for t in trials), f"seed {seed}: " + _report(trials)
    # The next run, in the sandbox the SIGKILL trial used, passes and leaves the dev data alone.
    box = boxes["SIGKILL"]
    before = dev_fingerprint()
    code, out = box.run(box.e2e_argv(suite=FAST_E2E), timeout=300)
    assert code == 0, out[-3000:]
    assert dev_fingerprint() == before
    assert box.wait_no_leftovers() == []


@pytest.mark.soak
@pytest.mark.timeout(5400)
@pytest.mark.parametrize("runner", ["pytest", "make"])
def test_many_interrupts_at_random_points(
    make_sandbox: Callable[[str], Sandbox], runner: str
) -> None:
    if runner == "make" and make_e2e_argv() is None:
        pytest.skip("scripts/e2e.sh does not exist yet: `make e2e` cannot run")
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    per = soak_trials(10)
    plans = [
        (sig, target, round(rng.uniform(0.2, SUITE_SECONDS + 4), 2))
        for sig, target in SOAK_CASES[:3]
        for _ in range(per)
    ]
    plans += [
        (sig, target, round(rng.uniform(0.2, SUITE_SECONDS), 2))
        for sig, target in SOAK_CASES[3:]
        for _ in range(max(1, per // 3))
    ]
    rng.shuffle(plans)

    def argv_for(box: Sandbox) -> list[str]:
        argv = make_e2e_argv() if runner == "make" else box.e2e_argv()
        assert argv is not None
        return argv

    trials = _run_trials(make_sandbox, plans, argv_for, parallel=2)
    counts = {
        f"{s}/{t}": sum(1 for x in trials if (x.signal, x.target) == (s, t)) for s, t in SOAK_CASES
    }
    print(f"interrupt trials ({runner}, seed {seed}): {counts}")
    assert all(t.ok for t in trials), f"seed {seed}: " + _report(trials)
