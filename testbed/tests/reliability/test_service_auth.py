"""Authenticated services and a service account of their own (issue 18, finding 3), tried as an
adversary would: the unprivileged local account `nobody` against services root started.

Before: PostgreSQL trusted every local connection and its E2E role was a superuser, so `nobody`
logged in and ran `COPY ... TO PROGRAM` as the server's account, the system `postgres` account
that owns the developer's PostgreSQL; Valkey had no password (`nobody` ran FLUSHALL); logs and
the record were 0644. Each test below fails that way on the old code.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest
import redis
from rel_sandbox import Sandbox, server_pids

from testbed.config import default_cache_dir

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(os.geteuid() != 0, reason="the attacks are nobody's against root"),
]

CACHE = default_cache_dir()
PROOF = "testbed-auth-proof"
# The instance's password files (testbed.services.credentials.FILES; named here so the test
# runs, and fails, against code that has none).
FILES = ("pg-app.password", "pg-admin.password", "valkey.password")


def _tool(pinned: str, fallback: str) -> str:
    """A client nobody can run: the pinned build's (world-readable in root's cache), else PATH's."""
    found = sorted(CACHE.glob(pinned))
    path = str(found[-1]) if found else shutil.which(fallback)
    if path is None:
        pytest.skip(f"no {fallback} to attack with (run the sandbox once to fetch the pinned one)")
    return path


def as_nobody(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run argv as `nobody` (su, no login shell), with env; never raises on failure."""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = f"cd / && env {assigns} {shlex.join(argv)}"
    return subprocess.run(
        ["su", "nobody", "-s", "/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def psql(
    sandbox: Sandbox, user: str, sql: str, password: str = ""
) -> subprocess.CompletedProcess[str]:
    argv = [_tool("postgresql-16*/bin/psql", "psql"), "-X", "-w", "-h", "127.0.0.1"]
    argv += ["-p", str(sandbox.pg_port), "-U", user, "-d", "opsdesk_e2e", "-c", sql]
    return as_nobody(argv, PGPASSWORD=password, PGCONNECT_TIMEOUT="5")


def valkey(sandbox: Sandbox, *command: str) -> subprocess.CompletedProcess[str]:
    argv = [_tool("valkey-*/bin/valkey-cli", "redis-cli"), "-h", "127.0.0.1"]
    return as_nobody([*argv, "-p", str(sandbox.redis_port), *command])


@pytest.fixture
def up(sandbox: Sandbox) -> Sandbox:
    code, out = sandbox.testbed("up")
    assert code == 0, out
    return sandbox


def test_nobody_cannot_log_in_without_the_password(up: Sandbox) -> None:
    proof = Path("/tmp") / f"{PROOF}-{up.pg_port}"
    proof.unlink(missing_ok=True)
    try:
        for role in ("opsdesk_e2e", "opsdesk_e2e_admin", "postgres"):
            attack = f"COPY (SELECT 1) TO PROGRAM 'id -un > {proof}'"
            proc = psql(up, role, attack)
            assert proc.returncode != 0, f"{role} logged in without a password: {proc.stdout}"
            assert "password" in proc.stderr or "authentication" in proc.stderr, proc.stderr
            assert not proof.exists(), f"COPY TO PROGRAM ran as {proof.read_text().strip()}"
        # Nor over the socket: it is in a directory only the servers' account can enter.
        sock = up.state_dir / "pg" / "sock"
        argv = [_tool("postgresql-16*/bin/psql", "psql"), "-X", "-w", "-h", str(sock)]
        proc = as_nobody(
            [*argv, "-p", str(up.pg_port), "-U", "opsdesk_e2e_admin", "-c", "SELECT 1"]
        )
        assert proc.returncode != 0, proc.stdout
    finally:
        proof.unlink(missing_ok=True)


def test_the_app_roles_password_gives_no_copy_to_program(up: Sandbox) -> None:
    """Even a leaked URL (the app role's password) is no superuser: no program runs."""
    proof = Path("/tmp") / f"{PROOF}-copy-{up.pg_port}"
    proof.unlink(missing_ok=True)
    password = up.urls()["E2E_DATABASE_URL"].split("@")[0].rsplit(":", 1)[1]
    try:
        ok = psql(
            up,
            "opsdesk_e2e",
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            password,
        )
        assert ok.returncode == 0, ok.stderr  # the password is the real one
        assert ok.stdout.split()[2] == "f", ok.stdout  # and the role no superuser
        proc = psql(up, "opsdesk_e2e", f"COPY (SELECT 1) TO PROGRAM 'id -un > {proof}'", password)
        assert proc.returncode != 0, proc.stdout
        assert "permission denied" in proc.stderr, proc.stderr
        assert not proof.exists(), f"COPY TO PROGRAM ran as {proof.read_text().strip()}"
    finally:
        proof.unlink(missing_ok=True)


def test_nobody_cannot_ping_or_flush_valkey(up: Sandbox) -> None:
    client = redis.Redis.from_url(up.urls()["E2E_REDIS_URL"])
    try:
        client.set("victim", "kept")
        for command in (("PING",), ("FLUSHALL",), ("CONFIG", "SET", "requirepass", "")):
            proc = valkey(up, *command)
            assert "NOAUTH" in proc.stdout + proc.stderr, (command, proc.stdout, proc.stderr)
        assert client.get("victim") == b"kept"
    finally:
        client.close()


def test_nobody_reads_no_password_file_log_or_record(up: Sandbox) -> None:
    names = ("postgres.log", "valkey.log", "state.json", *FILES)  # the record holds the URLs
    secrets = [up.state_dir / name for name in names]
    secrets.append(up.state_dir / "valkey" / "valkey.conf")
    for path in secrets:
        assert path.exists(), path
        proc = as_nobody(["cat", str(path)])
        assert proc.returncode != 0, f"nobody read {path}: {proc.stdout[:200]}"
        mode = path.stat().st_mode & 0o777
        assert mode == 0o600, f"{path} is {mode:o}"
    for data in (up.state_dir / "pg" / "data", up.state_dir / "valkey"):
        assert data.stat().st_mode & 0o777 == 0o700, data


def test_the_servers_run_as_testbeds_own_account(up: Sandbox) -> None:
    pids = server_pids(up.state_dir)
    assert set(pids) == {"postgres", "valkey"}
    dev_uids = {pwd.getpwnam(n).pw_uid for n in ("postgres", "nobody") if _exists(n)}
    for name, pid in pids.items():
        uid = psutil.Process(pid).uids().real
        account = pwd.getpwuid(uid).pw_name
        assert uid != 0, name
        assert uid not in dev_uids, f"{name} runs as {account}"
        assert account == "testbed-svc", f"{name} runs as {account}"
    entry = pwd.getpwnam("testbed-svc")
    assert entry.pw_shell.endswith(("nologin", "false"))
    assert not Path(entry.pw_dir).exists() or entry.pw_dir == "/nonexistent"


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
