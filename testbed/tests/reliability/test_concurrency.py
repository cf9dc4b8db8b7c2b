"""Two runs at once from two checkouts on one machine.

Decision (documented in the README's Reliability section): runs on the SAME ports do not share
services. The first one owns them; the second is refused at once with a PortConflict that names
the port and the holder's command line (which shows the other checkout's state dir) and the fix:
give the second checkout its own ports (E2E_PG_PORT / E2E_REDIS_PORT), and then both pass side
by side. Sharing would let the first run's teardown pull the services from under the second;
waiting would look like a hang and could wait for hours behind a `make up`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rel_sandbox import PYTEST, REPO, Sandbox, payload_suite


def test_second_checkout_on_the_same_ports_is_told_which_port(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    first, second = make_sandbox("first"), make_sandbox("second")
    second.pg_port, second.redis_port = first.pg_port, first.redis_port
    code, out = first.testbed("up")
    assert code == 0, out
    started = time.monotonic()
    code, out = second.testbed("up")
    assert time.monotonic() - started < 30, "the second checkout waited instead of reporting"
    assert code == 1, out
    assert f"port {first.pg_port}" in out, out
    assert str(first.state_dir) in out, f"the holder (the other checkout) is not named: {out}"
    assert "E2E_PG_PORT" in out, out
    # Refused before it touched anything: the first checkout's services are still healthy.
    code, out = first.testbed("status")
    assert code == 0, out


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_own_ports_run_side_by_side(make_sandbox: Callable[[str], Sandbox], tmp_path: Path) -> None:
    first, other = make_sandbox("first"), make_sandbox("other")
    code, out = first.testbed("up")
    assert code == 0, out
    suite = payload_suite(tmp_path)
    code, out = other.run(
        [str(PYTEST), str(suite), "-n", "2", "-q", "-p", "no:randomly"],
        env=other.env(REL_TESTS="4"),
        cwd=tmp_path,
    )
    assert code == 0, out[-3000:]
    code, out = first.testbed("status")
    assert code == 0, out


def _clone(tmp: Path, name: str) -> Path:
    target = tmp / name
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(target)], check=True)
    # Uncommitted work of the team is not in the clone; a clone tests what is committed.
    code = subprocess.run(
        ["make", "-s", "-C", str(target), "deps"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert code.returncode == 0, code.stdout + code.stderr
    return target


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_two_clones_make_e2e_at_once(
    make_sandbox: Callable[[str], Sandbox], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("clones")
    clones = [_clone(tmp, "cloneA"), _clone(tmp, "cloneB")]
    boxes = [make_sandbox("cloneA"), make_sandbox("cloneB")]
    # Same ports (the default situation, moved off 5433/6380 so a developer's `make up` and
    # the main run are not disturbed): one owns the services, the other must say why it cannot.
    boxes[1].pg_port, boxes[1].redis_port = boxes[0].pg_port, boxes[0].redis_port
    argv = ["make", "-s", "e2e", "N=2"]
    runs = [
        box.start(argv, cwd=clone, env=box.env(E2E_VENV=str(clone / ".venv")), name="make")
        for box, clone in zip(boxes, clones, strict=True)
    ]
    codes = [run.wait(900) for run in runs]
    outs = [run.output() for run in runs]
    for run in runs:
        run.kill_all()
    assert None not in codes, "a clone's make e2e hung"
    passed = [
        i
        for i, (c, o) in enumerate(zip(codes, outs, strict=True))
        if c == 0 and " passed" in o and "skipped" not in o.splitlines()[-1]
    ]
    assert passed, f"neither clone passed: {codes}\n{outs[0][-2000:]}\n{outs[1][-2000:]}"
    loser = 1 - passed[0] if len(passed) == 1 else None
    if loser is not None:
        assert (
            f"port {boxes[0].pg_port}" in outs[loser]
            or f"port {boxes[0].redis_port}" in outs[loser]
        ), outs[loser][-3000:]
    # Own ports: both pass side by side.
    boxes.append(make_sandbox("cloneB2"))
    runs = [
        box.start(argv, cwd=clone, env=box.env(E2E_VENV=str(clone / ".venv")), name="make2")
        for box, clone in zip([boxes[0], boxes[2]], clones, strict=True)
    ]
    codes = [run.wait(900) for run in runs]
    assert codes == [0, 0], "\n".join(run.output()[-2000:] for run in runs)
    for box in boxes:
        assert box.wait_no_leftovers() == []
