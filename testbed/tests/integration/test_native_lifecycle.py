"""The native backend for real: versions, reuse, idempotent down, port conflicts, cleanup."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis

from testbed.config import Settings
from testbed.errors import HealthTimeout, PortConflict
from testbed.services import native as native_module
from testbed.services.lifecycle import ensure_up
from testbed.services.native import NativeBackend
from testbed.services.ownership import USER, new_lease
from testbed.services.ports import is_free
from testbed.services.procs import is_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def pids(backend: NativeBackend) -> dict[str, int]:
    return backend.pids()


def server_uid(pid: int) -> int:
    """Real uid of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_up_serves_postgres_16_and_valkey_8(native: NativeBackend, settings: Settings) -> None:
    eps = native.up()
    assert eps.backend == "native"
    assert eps.pg_version.startswith("16.")
    assert eps.redis_version.startswith("8.")
    assert eps.redis_databases == 64
    assert f":{settings.pg_port}/" in eps.database_url
    assert "@127.0.0.1:" in eps.database_url
    with psycopg.connect(eps.database_url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        assert version is not None
        assert str(version[0]).startswith("16.")
        settings_rows: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync',"
                " 'synchronous_commit', 'full_page_writes', 'max_connections',"
                " 'listen_addresses')"
            ).fetchall()
        )
        assert settings_rows["fsync"] == settings_rows["full_page_writes"] == "off"
        assert settings_rows["synchronous_commit"] == "off"
        assert int(settings_rows["max_connections"]) >= 200
        assert settings_rows["listen_addresses"] == "127.0.0.1"
        conn.execute("CREATE SCHEMA e2e_probe")  # the role may create schemas
        conn.execute("CREATE TABLE e2e_probe.t (id int)")
    client = redis.Redis.from_url(eps.redis_url)
    try:
        assert client.ping() is True
        assert client.info("server")["valkey_version"].startswith("8.")
        assert client.config_get("databases") == {"databases": "64"}
        client.select(63)
    finally:
        client.close()
    if os.geteuid() == 0:  # servers must not run as root (PostgreSQL refuses to)
        assert all(server_uid(pid) != 0 for pid in pids(native).values())


def test_up_again_reuses_the_same_processes(native: NativeBackend, settings: Settings) -> None:
    first, started = ensure_up(settings)
    assert started is True
    before = pids(native)
    t0 = time.monotonic()
    again, started_again = ensure_up(settings)
    elapsed = time.monotonic() - t0
    assert started_again is False
    assert again == first
    assert pids(native) == before
    assert native.up() == first
    assert pids(native) == before
    assert elapsed < 1.0, f"reuse took {elapsed:.2f} s"


def test_racing_callers_agree_on_who_started(native: NativeBackend, settings: Settings) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: ensure_up(settings), range(3)))
    assert sorted(started for _, started in results) == [False, False, True]
    assert len({eps for eps, _ in results}) == 1


def test_cold_up_with_cached_template_is_fast(native: NativeBackend) -> None:
    native.up()  # makes sure binaries and the template are cached
    native.down()
    t0 = time.monotonic()
    native.up()
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"cold up took {elapsed:.2f} s"


def test_down_is_idempotent_and_leaves_nothing(native: NativeBackend, settings: Settings) -> None:
    native.up()
    running = pids(native)
    assert len(running) == 2
    assert all(is_alive(pid) for pid in running.values())
    native.down()
    native.down()
    assert not any(is_alive(pid) for pid in running.values())
    assert not settings.state_dir.exists()
    assert native.running() is None


def test_port_conflict_fails_fast_naming_port_and_holder(
    native: NativeBackend, settings: Settings
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.pg_port))
        squatter.listen()
        t0 = time.monotonic()
        with pytest.raises(PortConflict) as info:
            native.up()
        assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert f"port {settings.pg_port}" in message
    assert "E2E_PG_PORT" in message
    assert f"pid {os.getpid()}" in message
    assert pids(native) == {}  # nothing was started


def test_reap_cleans_up_after_a_killed_run(native: NativeBackend, settings: Settings) -> None:
    native.up()
    running = pids(native)
    for pid in running.values():
        os.killpg(pid, signal.SIGKILL)  # what a SIGKILLed run leaves: dead servers, their files
    deadline = time.monotonic() + 5
    while any(is_alive(p) for p in running.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert native.running() is None
    assert "no longer the process we started" in native.status().problems[0]
    removed = native.reap()
    assert any(item.endswith("postgres.pid") for item in removed)
    assert not settings.state_dir.exists()
    assert native.up().pg_version.startswith("16.")  # and the next run starts cleanly


@pytest.mark.parametrize("failure", [KeyboardInterrupt, HealthTimeout])
def test_a_start_that_fails_after_valkey_answered_stops_valkey(
    native: NativeBackend,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    failure: type[BaseException],
) -> None:
    """Ctrl-C, or a PostgreSQL that never answers, once Valkey runs: the cleanup stops the Valkey
    it started (whatever Valkey did to itself meanwhile) and removes the state dir."""
    started: dict[str, int] = {}

    def postgres_fails(*args: object, **kwargs: object) -> str:
        started.update({name: p.pid for name, p in native.store.read().processes().items()})
        raise failure("PostgreSQL did not answer")

    monkeypatch.setattr(native_module.health, "wait_postgres", postgres_fails)
    with pytest.raises(failure):
        native.ensure(new_lease(USER, None))
    assert set(started) == {"postgres", "valkey"}
    assert not any(is_alive(pid) for pid in started.values()), started
    assert is_free(settings.redis_port)
    assert not settings.state_dir.exists()


def test_foreground_up_takes_its_servers_down_on_sigterm(settings: Settings) -> None:
    argv = [
        sys.executable,
        "-m",
        "testbed",
        "up",
        "--foreground",
        "--backend",
        "native",
        "--pg-port",
        str(settings.pg_port),
        "--redis-port",
        str(settings.redis_port),
        "--state-dir",
        str(settings.state_dir),
        "--wait-timeout",
        "20",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "running in the foreground" in line:
                break
        assert any("E2E services started" in line for line in lines), lines
        servers = NativeBackend(settings).pids()
        assert len(servers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not any(is_alive(pid) for pid in servers.values())
        assert not settings.state_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        NativeBackend(settings).down()
