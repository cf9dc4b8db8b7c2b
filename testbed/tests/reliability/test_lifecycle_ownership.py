"""Ownership of the service lifecycle, as a user and an adversary meet it (docs/reliability.md
lists each case): testbed deletes only what it made, stops only processes it can prove it
started, refuses what it cannot do safely, and says so in one line.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from rel_sandbox import (
    PYTEST,
    PYTHON,
    REPO,
    Sandbox,
    payload_suite,
    reap_lock,
    server_pids,
    wait_for,
)

from testbed.config import default_cache_dir, default_state_root, project_name
from testbed.services.procs import is_alive

pytestmark = pytest.mark.timeout(240)

PG_CACHE = default_cache_dir()  # where the pinned binaries are, when a run fetched them


def _assert_one_line_error(code: int, out: str, *needles: str) -> None:
    assert code not in (0, None), out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert len(errors[0]) < 600, f"{len(errors[0])} characters: {errors[0][:600]}"
    for needle in needles:
        assert needle in errors[0], out


def _decoy(*argv: str) -> subprocess.Popen[bytes]:
    """A process that looks like a server by its command line (e.g. has "postgres" in it)."""
    code = "import time; time.sleep(120)"
    return subprocess.Popen([sys.executable, "-c", code, *argv], start_new_session=True)


# 1 ------------------------------------------------------------------------------------------
def test_case01_user_files_in_the_state_dir_survive_up_down_reap(sandbox: Sandbox) -> None:
    user_dir = sandbox.root / "mine"
    user_dir.mkdir()
    for name in ("pg", "valkey"):
        (user_dir / name).mkdir()
        (user_dir / name / "keep.txt").write_text("a user's file")
    for name in ("postgres.log", "valkey.pid", "state.json"):
        (user_dir / name).write_text("a user's file")
    user_dir.chmod(0o1777)  # like /tmp: the sticky bit must survive
    before = sorted(str(p.relative_to(user_dir)) for p in user_dir.rglob("*"))
    code, out = sandbox.testbed("up", E2E_STATE_DIR=str(user_dir))
    _assert_one_line_error(code, out, str(user_dir), "E2E_STATE_DIR")
    for command in ("down", "reap"):
        code, out = sandbox.testbed(command, E2E_STATE_DIR=str(user_dir))
        assert code == 0, out
    assert sorted(str(p.relative_to(user_dir)) for p in user_dir.rglob("*")) == before
    assert stat.S_IMODE(user_dir.stat().st_mode) == 0o1777


# 2 ------------------------------------------------------------------------------------------
def test_case02_a_reused_pid_is_never_stopped(sandbox: Sandbox) -> None:
    code, out = sandbox.testbed("up")
    assert code == 0, out
    real = server_pids(sandbox.state_dir)["postgres"]
    decoy = _decoy("postgres", "-D", "/somewhere/else")
    try:
        # The server dies (a reboot, an OOM kill) and its pid now names another PostgreSQL.
        os.killpg(real, signal.SIGKILL)
        # Gone, or a zombie: where PID 1 reaps no orphans (a default container) it stays one.
        assert wait_for(lambda: not is_alive(real), 10)
        (sandbox.state_dir / "postgres.pid").write_text(f"{decoy.pid}\n")
        state_file = sandbox.state_dir / "state.json"
        state = json.loads(state_file.read_text())
        if "processes" in state:  # the record names it by identity: forge that too
            state["processes"]["postgres"]["pid"] = decoy.pid
            state_file.write_text(json.dumps(state))
        code, out = sandbox.testbed("down")
        assert code == 0, out
        # A stopped decoy would exit within moments of `down` returning: wait for exactly that.
        with pytest.raises(subprocess.TimeoutExpired):
            decoy.wait(timeout=0.5)
        assert decoy.returncode is None, f"down stopped a process it did not start:\n{out}"
        assert f"left pid {decoy.pid} alone" in out, out
    finally:
        decoy.kill()
        decoy.wait()


# 3 ------------------------------------------------------------------------------------------
def test_case03_up_on_other_ports_is_refused_and_keeps_the_data(
    sandbox: Sandbox, make_sandbox: object
) -> None:
    code, out = sandbox.testbed("up")
    assert code == 0, out
    url = sandbox.database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA demo")  # a user's schema kept across runs
    other = Sandbox.make("other")  # only for two more free ports
    try:
        code, out = sandbox.testbed(
            "up", E2E_PG_PORT=str(other.pg_port), E2E_REDIS_PORT=str(other.redis_port)
        )
    finally:
        shutil.rmtree(other.root, ignore_errors=True)
    _assert_one_line_error(code, out, str(sandbox.pg_port), str(sandbox.redis_port), "make down")
    code, status = sandbox.testbed("status")
    assert code == 0, status
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'demo'").fetchone()
    assert row is not None, "the user's schema is gone"
    code, out = sandbox.testbed(
        "up", E2E_PG_PORT=str(sandbox.pg_port), E2E_REDIS_PORT=str(sandbox.pg_port)
    )
    assert code == 2, out
    assert "E2E_REDIS_PORT" in out, out


# 5 ------------------------------------------------------------------------------------------
def test_case05_down_after_eval_make_env_stops_the_services(sandbox: Sandbox) -> None:
    code, out = sandbox.testbed("up")
    assert code == 0, out
    code, exports = sandbox.testbed("env")
    assert code == 0, exports
    env = dict(
        shlex.split(line)[1].split("=", 1) for line in exports.splitlines() if "export" in line
    )
    assert "DATABASE_URL" in env
    environ = sandbox.env(**env)
    environ.pop("E2E_BACKEND")  # auto, as a user's shell has it
    code, out = sandbox.run([str(PYTHON), "-m", "testbed", "down"], env=environ, timeout=90)
    assert code == 0, out
    assert wait_for(lambda: sandbox.leftovers() == [], 15), (out, sandbox.leftovers())


# 6 ------------------------------------------------------------------------------------------
def _fake_checkout(root: Path) -> Path:
    """A checkout of its own (a copy of the package and the compose file) that can be deleted."""
    checkout = root / "gone-checkout"
    shutil.copytree(REPO / "testbed" / "src", checkout / "testbed" / "src")
    shutil.copy(REPO / "docker-compose-e2e.yml", checkout)
    return checkout


def test_case06_services_of_a_deleted_checkout_are_reaped(sandbox: Sandbox) -> None:
    checkout = _fake_checkout(sandbox.root)
    env = sandbox.env(PYTHONPATH=str(checkout / "testbed" / "src"))
    # Its default state dir: reap looks in the invoking user's base, and nowhere else.
    env.pop("E2E_STATE_DIR")
    gone_state = default_state_root() / project_name(checkout.resolve(), "opsdesk")
    # Every other reap of this suite waits until this one's has run (any reap takes a deleted
    # checkout's services down, and "nothing to reap" here would then be no proof).
    with reap_lock(exclusive=True):
        try:
            code, out = sandbox.run(
                [str(PYTHON), "-m", "testbed", "up"], env=env, cwd=checkout, timeout=90
            )
            assert code == 0, out
            assert str(checkout) in (gone_state / "state.json").read_text()
            shutil.rmtree(checkout)  # the user deletes the checkout, services still running
            code, out = sandbox.testbed("up")
            _assert_one_line_error(code, out, f"port {sandbox.pg_port}", "make reap")
            code, out = sandbox.testbed("reap")
            assert code == 0, out
            assert "nothing to reap" not in out, out
            assert wait_for(lambda: sandbox.leftovers() == [], 15), sandbox.leftovers()
            assert not gone_state.exists(), out
        finally:
            sandbox.testbed("down", E2E_STATE_DIR=str(gone_state))


# 9 ------------------------------------------------------------------------------------------
def test_case09a_unwritable_state_dir_is_one_line(sandbox: Sandbox) -> None:
    target = "/sys/opsdesk-e2e-state" if os.geteuid() == 0 else "/proc/opsdesk-e2e-state"
    code, out = sandbox.testbed("up", E2E_STATE_DIR=target)
    _assert_one_line_error(code, out, target)


def _limited(megabytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (megabytes << 20, megabytes << 20))


def test_case09b_template_that_does_not_fit_is_one_line(sandbox: Sandbox) -> None:
    # A file-size limit makes the copy fail like a full tmpfs would (EFBIG instead of ENOSPC).
    code, out = sandbox.testbed("up")  # the template is cached (it may not be yet)
    assert code == 0, out
    code, out = sandbox.testbed("down")
    assert code == 0, out
    proc = subprocess.run(
        [str(PYTHON), "-m", "testbed", "up"],
        env=sandbox.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        preexec_fn=lambda: _limited(2),  # a limit for the child only
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert len(out) < 3000, f"{len(out)} characters of output"
    _assert_one_line_error(proc.returncode, out, "E2E_STATE_DIR")
    assert sandbox.wait_no_leftovers() == []


def test_case09c_state_dir_the_server_user_cannot_enter_is_one_line(sandbox: Sandbox) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the servers as another user")
    private = sandbox.root / "private"
    private.mkdir(mode=0o700)  # what `mktemp -d` gives root
    code, out = sandbox.testbed("up", E2E_STATE_DIR=str(private / "state"))
    _assert_one_line_error(code, out, str(private))
    assert "E2E_WAIT_TIMEOUT" not in out, out  # waiting longer would not help


# 10 -----------------------------------------------------------------------------------------
def test_case10_a_damaged_template_is_rebuilt(sandbox: Sandbox) -> None:
    cache = sandbox.root / "cache"
    binaries = {}
    pg = sorted(PG_CACHE.glob("postgresql-16*/bin"))
    vk = sorted(PG_CACHE.glob("valkey-*/bin/valkey-server"))
    if pg and vk:  # reuse the pinned binaries; only the template is private
        binaries = {"E2E_PG_BIN": str(pg[-1]), "E2E_VALKEY_BIN": str(vk[-1])}
    env = {"E2E_CACHE_DIR": str(cache), **binaries}
    code, out = sandbox.testbed("up", **env)
    assert code == 0, out
    code, out = sandbox.testbed("down", **env)
    assert code == 0, out
    (template,) = cache.glob("pgdata-template-*")
    (template / "global" / "pg_control").unlink()
    code, out = sandbox.testbed("up", **env)
    assert code == 0, out
    code, out = sandbox.testbed("status", **env)
    assert code == 0, out
    assert (template / "global" / "pg_control").is_file()


# 11 -----------------------------------------------------------------------------------------
def test_case11a_reap_drops_a_killed_runs_schemas(sandbox: Sandbox, tmp_path: Path) -> None:
    code, out = sandbox.testbed("up")
    assert code == 0, out
    progress = tmp_path / "progress"
    progress.mkdir()
    suite = payload_suite(tmp_path)
    run = sandbox.start(
        [str(PYTEST), str(suite), "-n", "2", "-p", "no:randomly", "-q"],
        env=sandbox.env(REL_PROGRESS=str(progress), REL_TESTS="40", REL_SLEEP="0.3"),
        cwd=tmp_path,
    )
    assert wait_for(lambda: len(list(progress.iterdir())) >= 4, 90), run.output()
    run.signal_group(signal.SIGKILL)
    run.wait(10)
    assert wait_for(lambda: run.group_alive() == [], 30)
    url = sandbox.database_url()
    query = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'e2e\\_%'"
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(query).fetchall(), "the killed run left no schema to reap"
    code, out = sandbox.testbed("reap")
    assert code == 0, out
    with psycopg.connect(url, autocommit=True) as conn:
        left = conn.execute(query).fetchall()
    assert left == [], f"reap left {left}:\n{out}"


def test_case11b_no_lock_files_or_created_parents_pile_up(sandbox: Sandbox) -> None:
    nested = sandbox.root / "a" / "b" / "state"
    code, out = sandbox.testbed("up", E2E_STATE_DIR=str(nested))
    assert code == 0, out
    code, out = sandbox.testbed("down", E2E_STATE_DIR=str(nested))
    assert code == 0, out
    assert not (sandbox.root / "a").exists(), "down left the parents it created"
    for port in (sandbox.pg_port, sandbox.redis_port):
        assert not Path(f"/tmp/testbed-port-{port}.lock").exists()


# 12 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "1e9", "-1"])
def test_case12_every_duration_is_bounded(sandbox: Sandbox, value: str) -> None:
    started = time.monotonic()
    code, out = sandbox.testbed("wait", timeout=20, E2E_WAIT_TIMEOUT=value)
    assert code == 2, out
    assert "E2E_WAIT_TIMEOUT" in out, out
    assert time.monotonic() - started < 20
