"""Two checkouts on the same ports: the machine-wide port lock and the "is it ours?" check."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.config import Settings, load_settings
from testbed.errors import PortConflict
from testbed.services import identity, portlock
from testbed.services.endpoints import Endpoints
from testbed.services.native import NativeBackend
from testbed.services.ownership import (
    USER,
    ProcessIdentity,
    Record,
    StateDir,
    holder_identity,
    new_lease,
)
from testbed.services.procs import is_alive


def free_port() -> int:
    """A port nothing listens on right now (never a developer's 5432-6380 ones)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in (5432, 5433, 6379, 6380):
            return port


@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Port locks in this test's own dir, so tests never meet a real run's locks."""
    path = tmp_path / "locks"
    path.mkdir()
    monkeypatch.setattr(portlock, "LOCK_DIR", path)
    return path


def test_lock_file_is_world_usable(lock_dir: Path) -> None:
    with portlock.port_lock([24001], timeout=1, say=print):
        pass
        mode = stat.S_IMODE((lock_dir / "testbed-port-24001.lock").stat().st_mode)
    assert mode == 0o666
    assert list(lock_dir.iterdir()) == []  # removed on release: lock files do not pile up
    (lock_dir / "testbed-port-24001.lock").touch(0o644)
    with portlock.port_lock([24001], timeout=1, say=print):  # an existing file opens too
        pass


def test_second_caller_waits_until_the_first_releases() -> None:
    messages: list[str] = []
    held = threading.Event()
    release = threading.Event()

    def first() -> None:
        with portlock.port_lock([24003, 24002], timeout=5, say=messages.append):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(5)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    with portlock.port_lock([24002, 24003], timeout=5, say=messages.append):
        waited = time.monotonic() - t0
    thread.join()
    assert waited >= 0.25
    assert messages == ["waiting for another checkout starting services on port 24002…"]


def test_wait_is_bounded() -> None:
    with portlock.port_lock([24004], timeout=1, say=print):
        t0 = time.monotonic()
        with (
            pytest.raises(PortConflict, match="port 24004: another checkout has been starting"),
            portlock.port_lock([24004], timeout=0.2, say=lambda m: None),
        ):
            pass
        assert time.monotonic() - t0 < 2


class FakeBackend(NativeBackend):
    """NativeBackend whose "servers" are listening sockets of this process."""

    def __init__(
        self, settings: Settings, messages: list[str], waiting: threading.Event | None = None
    ) -> None:
        self.waiting = waiting or threading.Event()

        def say(message: str) -> None:
            messages.append(message)
            if message.startswith("waiting for"):
                self.waiting.set()  # the other caller has arrived and waits for the lock

        super().__init__(settings, say=say)
        self.sockets: list[socket.socket] = []

    def _prepare(self) -> Any:
        return None

    def _start(self, prepared: Any, leases: Any = ()) -> Endpoints:
        # A real start takes ~1 s, so the other caller arrives meanwhile: wait until it has.
        self.waiting.wait(5)
        s = self.settings
        for port in (s.pg_port, s.redis_port):
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))  # fails like a real server if the lock were absent
            sock.listen()
            self.sockets.append(sock)
        StateDir(self.state_dir).prepare(project=s.project)
        record = Record(
            backend="native",
            project=s.project,
            checkout=str(s.checkout),
            pg_port=s.pg_port,
            redis_port=s.redis_port,
            pg_version="16.15",
            redis_version="8.1.8",
        )
        for name in ("postgres", "valkey"):
            record.set_process(name, holder_identity())
        record.set_leases(list(leases))
        self.store.write(record)
        return self._endpoints(record)

    def _healthy(self, record: Record) -> Endpoints | None:
        return self._endpoints(record) if record.get("pg_port") else None

    def down(self) -> str:
        for sock in self.sockets:
            sock.close()
        StateDir(self.state_dir).remove()
        return "down"


def _settings(tmp_path: Path, name: str, pg: int, redis: int) -> Settings:
    (tmp_path / name).mkdir(exist_ok=True)  # the checkout exists (else the fix is `make reap`)
    return load_settings(
        {},
        backend="native",
        pg_port=pg,
        redis_port=redis,
        state_dir=tmp_path / "states" / f"opsdesk-e2e-{name}",
        cache_dir=tmp_path / "cache",
        checkout=tmp_path / name,
        project=f"opsdesk-e2e-{name}",
    )


def _race(backends: list[FakeBackend]) -> list[tuple[Endpoints, bool] | BaseException]:
    barrier = threading.Barrier(len(backends))
    results: list[tuple[Endpoints, bool] | BaseException] = [RuntimeError()] * len(backends)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = backends[i].ensure(new_lease(USER, None))
        except BaseException as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(backends))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_other_checkout_on_the_same_ports_gets_a_conflict_naming_it(tmp_path: Path) -> None:
    pg, redis = free_port(), free_port()
    messages: list[list[str]] = [[], []]
    waiting = threading.Event()
    backends = [
        FakeBackend(_settings(tmp_path, name, pg, redis), messages[i], waiting)
        for i, name in enumerate(("clone-a", "clone-b"))
    ]
    try:
        results = _race(backends)
        winners = [i for i, r in enumerate(results) if isinstance(r, tuple)]
        assert len(winners) == 1, results
        win, lose = winners[0], 1 - winners[0]
        assert results[win] == (backends[win].running(), True)
        error = results[lose]
        assert isinstance(error, PortConflict)
        assert error.port == pg
        winner = backends[win].settings
        assert re.fullmatch(
            re.escape(
                f"port {pg} is held by the E2E services of another checkout "
                f"(project {winner.project}, state dir {winner.state_dir}, "
                f"pid {os.getpid()}): run `python -m testbed down` in "
                f"{winner.checkout}, or use other ports: "
            )
            + r"E2E_PG_PORT=\d+ E2E_REDIS_PORT=\d+",
            str(error),
        ), str(error)
        assert (
            f"waiting for another checkout starting services on port {min(pg, redis)}…"
            in (messages[lose])
        )
        assert not backends[lose].state_dir.exists()
    finally:
        for backend in backends:
            backend.down()


def test_same_checkout_racing_reuses_the_winners_services(tmp_path: Path) -> None:
    pg, redis = free_port(), free_port()
    # The second caller waits on the project's lock without a word: nothing to wait for here;
    # either order ends with one start and one reuse.
    started = threading.Event()
    started.set()
    backends = [
        FakeBackend(_settings(tmp_path, "clone-a", pg, redis), [], started) for _ in range(2)
    ]
    try:
        results = _race(backends)
        assert all(isinstance(r, tuple) for r in results), results
        assert sorted(r[1] for r in results if isinstance(r, tuple)) == [False, True]
        assert len({r[0] for r in results if isinstance(r, tuple)}) == 1
    finally:
        for backend in backends:
            backend.down()


def _backend(tmp_path: Path) -> NativeBackend:
    settings = _settings(tmp_path, "clone-b", free_port(), free_port())
    return NativeBackend(settings, say=lambda message: None)


def _eps(backend: NativeBackend) -> Endpoints:
    return backend._endpoints(
        {
            "pg_port": backend.settings.pg_port,
            "redis_port": backend.settings.redis_port,
            "pg_version": "16.15",
            "redis_version": "8.1.8",
        }
    )


def test_verify_accepts_our_own_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _backend(tmp_path)
    data = b.state_dir / "pg" / "data"
    monkeypatch.setattr(identity, "postgres_data_dir", lambda url: str(data))
    monkeypatch.setattr(identity, "valkey_pid", lambda url: 4242)
    b._verify_ours(_eps(b), data, 4242)


def test_verify_names_the_checkout_whose_postgres_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = _backend(tmp_path)
    other = tmp_path / "elsewhere" / "opsdesk-e2e-1a2b3c4d"
    monkeypatch.setattr(identity, "postgres_data_dir", lambda url: f"{other}/pg/data")
    with pytest.raises(PortConflict) as info:
        b._verify_ours(_eps(b), b.state_dir / "pg" / "data", 4242)
    port = b.settings.pg_port
    message = str(info.value)
    assert message.startswith(
        f"the PostgreSQL answering on port {port} is not the one we started (data directory "
        f"{other}/pg/data): we stopped ours. Port {port} is held by the E2E services "
        f"of another checkout (state dir {other}): run `python -m testbed down` there, or use "
        "other ports: E2E_PG_PORT="
    )
    assert info.value.port == port


def test_verify_catches_a_foreign_valkey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _backend(tmp_path)
    data = b.state_dir / "pg" / "data"
    monkeypatch.setattr(identity, "postgres_data_dir", lambda url: str(data))
    monkeypatch.setattr(identity, "valkey_pid", lambda url: 999)
    with pytest.raises(PortConflict) as info:
        b._verify_ours(_eps(b), data, 4242)
    assert str(info.value).startswith(
        f"the Valkey answering on port {b.settings.redis_port} is not the one we started "
        "(pid 999, ours is 4242): another process took the port while ours started; "
        "we stopped ours. Stop it, or use other ports: E2E_PG_PORT="
    )


def test_not_ours_stops_what_we_spawned_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Loser(NativeBackend):
        def _prepare(self) -> Any:
            return None

        def _start(self, prepared: Any, leases: Any = ()) -> Endpoints:
            StateDir(self.state_dir).prepare(project=self.settings.project)
            argv = [sys.executable, "-c", "import time; time.sleep(30)"]
            self.spawned = subprocess.Popen(argv, start_new_session=True)
            record = Record(backend="native", project=self.settings.project)
            ident = ProcessIdentity.of(self.spawned.pid)
            assert ident is not None
            record.set_process("postgres", ident)
            self.store.write(record)
            self._verify_ours(_eps(self), self.state_dir / "pg" / "data", 1)
            raise AssertionError("verification should have failed")

    monkeypatch.setattr(identity, "postgres_data_dir", lambda url: "/elsewhere/pg/data")
    b = Loser(_settings(tmp_path, "clone-b", free_port(), free_port()), say=lambda m: None)
    with pytest.raises(PortConflict, match="is not the one we started"):
        b.ensure(new_lease(USER, None))
    b.spawned.wait(5)
    assert not is_alive(b.spawned.pid)
    assert not b.state_dir.exists()
