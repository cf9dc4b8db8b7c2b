"""The breaker without servers: when it trips, what it says, and cutting a blocked connection."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import psutil
import pytest

import testbed
from testbed.isolation import sessions
from testbed.run import allocation, breaker


def _monitor(tmp_path: Path, outcomes: dict[str, list[bool]]) -> breaker.Monitor:
    services = [breaker.Service("PostgreSQL", "127.0.0.1", 1), breaker.Service("Valkey", "::1", 2)]

    def probe(service: breaker.Service) -> None:
        results = outcomes[service.name]
        if results and not results.pop(0):
            raise TimeoutError("timed out")

    return breaker.Monitor(services, tmp_path, every=0.001, probe_fn=probe)


def test_trips_after_three_failures_in_a_row(tmp_path: Path) -> None:
    monitor = _monitor(tmp_path, {"PostgreSQL": [True] * 50, "Valkey": [True, False, False, False]})
    monitor.start()
    monitor.join(5)
    trip = breaker.read_trip(tmp_path)
    assert trip is not None
    assert trip == monitor.trip
    assert (trip.service, trip.address, trip.port) == ("Valkey", "::1:2", 2)
    message = trip.message()
    assert message.startswith("Valkey at ::1:2 stopped answering at ")
    assert "3 probes timed out" in message


def test_failures_that_are_not_consecutive_do_not_trip(tmp_path: Path) -> None:
    flaky = [False, True, False, False, True, False, True] * 3
    probed = threading.Event()
    outcomes = {"PostgreSQL": flaky, "Valkey": []}
    monitor = _monitor(tmp_path, outcomes)
    probe = monitor.probe_fn

    def counting(service: breaker.Service) -> None:
        try:
            probe(service)
        finally:
            if not outcomes["PostgreSQL"]:
                probed.set()  # every outcome was used: the monitor ran through all of them

    monitor.probe_fn = counting
    monitor.start()
    assert probed.wait(10), "the monitor never probed"
    monitor.stop()
    assert not monitor.is_alive()
    assert monitor.trip is None
    assert breaker.read_trip(tmp_path) is None
    assert breaker.read_trip(None) is None


def test_trip_since_is_the_first_failure_of_the_run_that_tripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = itertools.count(1000)
    fake = types.SimpleNamespace(
        time=lambda: float(next(clock)), strftime=time.strftime, localtime=time.localtime
    )
    monkeypatch.setattr(breaker, "time", fake)
    # Valkey: ok, fail (t=1000), ok, then fails at t=1001, 1002, 1003: since is 1001.
    monitor = _monitor(
        tmp_path, {"PostgreSQL": [], "Valkey": [True, False, True, False, False, False]}
    )
    monitor.start()
    monitor.join(10)
    assert monitor.trip is not None
    assert monitor.trip.since == 1001.0
    assert breaker.read_trip(tmp_path) == monitor.trip


def test_the_monitor_renews_the_lease_every_round_even_when_renewing_fails(
    tmp_path: Path,
) -> None:
    ticks: list[int] = []
    renewed = threading.Event()

    def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) == 1:
            raise RuntimeError("the record is locked")  # best effort: the next round renews
        if len(ticks) == 3:
            renewed.set()

    services = [breaker.Service("PostgreSQL", "127.0.0.1", 1)]
    monitor = breaker.Monitor(services, tmp_path, tick=tick, every=0.001, probe_fn=lambda s: None)
    monitor.start()
    assert renewed.wait(10), f"ticked {len(ticks)} times"
    monitor.stop()
    assert not monitor.is_alive()
    assert monitor.trip is None


def test_a_tripped_monitor_stops_probing_and_renewing(tmp_path: Path) -> None:
    ticks: list[None] = []
    probes: list[str] = []

    def probe(service: breaker.Service) -> None:
        probes.append(service.name)
        raise ConnectionRefusedError(111, "Connection refused")

    services = [breaker.Service("PostgreSQL", "127.0.0.1", 1)]
    monitor = breaker.Monitor(
        services, tmp_path, tick=lambda: ticks.append(None), every=0.001, probe_fn=probe
    )
    monitor.start()
    monitor.join(10)
    assert not monitor.is_alive()
    assert probes == ["PostgreSQL"] * breaker.TRIP_AFTER
    assert len(ticks) == breaker.TRIP_AFTER - 1  # the round that trips does not renew
    assert monitor.trip is not None
    assert "3 probes failed: Connection refused" in monitor.trip.reason
    assert not (tmp_path / f"{breaker.TRIP_FILE}.tmp").exists()
    monitor.stop()  # after the end: returns at once


@pytest.mark.parametrize("content", ["", "{", "[]", '{"service": "Valkey"}', "null"])
def test_an_unreadable_trip_file_is_no_trip(tmp_path: Path, content: str) -> None:
    (tmp_path / breaker.TRIP_FILE).write_text(content)
    assert breaker.read_trip(tmp_path) is None
    assert breaker.read_trip(str(tmp_path)) is None


@pytest.mark.parametrize(
    ("name", "url", "expected"),
    [
        ("PostgreSQL", "postgresql://u:p@db.test:15432/x", ("db.test", 15432, False)),
        ("PostgreSQL", "postgresql:///x?host=/tmp", ("127.0.0.1", 5432, False)),
        ("PostgreSQL", "postgresql://u@[::1]/x", ("::1", 5432, False)),
        ("Valkey", "redis://cache.test/0", ("cache.test", 6379, False)),
        ("Valkey", "rediss://:pw@cache.test:16380/0", ("cache.test", 16380, True)),
        ("Valkey", "valkey://127.0.0.1:6380", ("127.0.0.1", 6380, False)),
    ],
)
def test_service_from_url(name: str, url: str, expected: tuple[str, int, bool]) -> None:
    service = breaker.Service.from_url(name, url)
    assert (service.name, service.host, service.port, service.tls) == (name, *expected)
    assert service.address == f"{expected[0]}:{expected[1]}"


def test_trip_message_names_the_service_and_the_time() -> None:
    since = time.mktime((2026, 1, 2, 10, 11, 12, 0, 0, -1))
    trip = breaker.Trip("PostgreSQL", "127.0.0.1:5433", 5433, since, "3 probes failed: x")
    assert trip.message() == (
        "PostgreSQL at 127.0.0.1:5433 stopped answering at 10:11:12 (3 probes failed: x); "
        "the rest of the run fails at once"
    )


@pytest.fixture
def server() -> socket.socket:
    """A listening socket that accepts (the kernel does) but never answers, like a frozen one."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_probe_times_out_on_a_silent_server(server: socket.socket) -> None:
    port = server.getsockname()[1]
    with pytest.raises(TimeoutError):
        breaker.probe(breaker.Service("Valkey", "127.0.0.1", port), timeout=0.2)
    server.close()
    with pytest.raises(ConnectionRefusedError):
        breaker.probe(breaker.Service("PostgreSQL", "127.0.0.1", port), timeout=0.2)


def _blocked(thread: threading.Thread) -> bool:
    """True once the thread sleeps in the kernel (here: in recv), by its /proc state."""
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "S"


def _reader(client: socket.socket) -> tuple[threading.Thread, list[bytes]]:
    """A thread blocked reading from client; what it read lands in the list."""
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(client.recv(1)), daemon=True)
    reader.start()
    deadline = time.monotonic() + 5
    while not _blocked(reader):
        assert time.monotonic() < deadline, "the reader never blocked"
        threading.Event().wait(0.001)
    return reader, got


def test_cut_connections_ends_a_blocked_read(server: socket.socket) -> None:
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    bystander = socket.create_connection(("127.0.0.1", other.getsockname()[1]))
    reader, got = _reader(client)
    assert breaker.cut_connections(port, {"10.9.9.9"}) == 0  # another host: left alone
    assert reader.is_alive()
    assert breaker.cut_connections(port, {"127.0.0.1"}) == 1
    reader.join(2)
    assert got == [b""]  # the blocked read returned at once, as on a closed connection
    assert client.fileno() >= 0  # the descriptor is still the client's
    bystander.settimeout(0)
    with pytest.raises(BlockingIOError):
        bystander.recv(1)  # another port: still open, nothing to read
    for sock in (client, bystander, other, server):
        sock.close()


def test_watch_notices_a_trip_and_cuts_connections_to_that_service(
    tmp_path: Path, server: socket.socket
) -> None:
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    reader, got = _reader(client)
    watch = breaker.Watch(tmp_path, every=0.005)
    assert watch.pid == os.getpid()
    watch.start()
    assert watch.trip is None
    trip = breaker.Trip("Valkey", f"localhost:{port}", port, time.time(), "3 probes failed: x")
    (tmp_path / breaker.TRIP_FILE).write_text(json.dumps(dataclasses.asdict(trip)))
    reader.join(5)
    assert got == [b""], "the watch never cut the connection"
    assert watch.trip == trip
    # From then on new connections to the service are cut as they appear.
    late = socket.create_connection(("127.0.0.1", port))
    late.settimeout(5)
    assert late.recv(1) == b""
    watch.stop()
    assert not watch.is_alive()
    for sock in (client, late, server):
        sock.close()


def test_addresses_of_a_host() -> None:
    assert "127.0.0.1" in breaker._addresses("localhost")
    assert breaker._addresses("127.0.0.1") == {"127.0.0.1"}
    assert breaker._addresses("no-such-host.invalid") == {"no-such-host.invalid"}


# PostgreSQL's SSLRequest as the protocol spells it: length 8, then the code 1234.5679.
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


class Answering(threading.Thread):
    """A healthy server: answers PostgreSQL's SSLRequest with 'N' and Valkey's PING with
    +PONG, and nothing else (a probe sending the wrong bytes gets no answer)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(64)
                self.received.append(data)
                if data == SSL_REQUEST:
                    conn.sendall(b"N")
                elif data == b"PING\r\n":
                    conn.sendall(b"+PONG\r\n")


@pytest.fixture
def answering() -> Iterator[Answering]:
    """A healthy stand-in server for the probes."""
    srv = Answering()
    srv.start()
    yield srv
    srv.sock.close()


@pytest.mark.parametrize("name", ["PostgreSQL", "Valkey"])
def test_probe_passes_on_a_healthy_server(answering: Answering, name: str) -> None:
    breaker.probe(breaker.Service(name, "127.0.0.1", answering.port), timeout=5)
    assert answering.received == [SSL_REQUEST if name == "PostgreSQL" else b"PING\r\n"]


def test_probe_of_a_tls_service_only_connects(server: socket.socket) -> None:
    port = server.getsockname()[1]
    breaker.probe(breaker.Service("Valkey", "127.0.0.1", port, tls=True), timeout=0.2)
    server.close()


def test_probe_fails_when_the_server_hangs_up_without_answering() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def hang_up() -> None:
        conn, _ = sock.accept()
        conn.recv(64)
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    with pytest.raises(ConnectionError, match="without answering"):
        breaker.probe(breaker.Service("Valkey", "127.0.0.1", sock.getsockname()[1]), timeout=5)
    thread.join(5)
    sock.close()


def test_the_default_probe_passes_healthy_servers(tmp_path: Path, answering: Answering) -> None:
    services = [breaker.Service(n, "127.0.0.1", answering.port) for n in ("PostgreSQL", "Valkey")]
    rounds = threading.Event()
    monitor = breaker.Monitor(services, tmp_path, tick=rounds.set, every=0.001)
    monitor.start()
    for _ in range(breaker.TRIP_AFTER + 1):
        assert rounds.wait(10)
        rounds.clear()
    monitor.stop()
    assert monitor.trip is None
    assert len(answering.received) >= 2 * (breaker.TRIP_AFTER + 1)


def test_reasons() -> None:
    assert breaker._reason(TimeoutError()) == "3 probes timed out after 2 s each"
    assert breaker._reason(ConnectionRefusedError(111, "Connection refused")) == (
        "3 probes failed: Connection refused"
    )
    assert breaker._reason(ConnectionError("closed")) == "3 probes failed: closed"


def test_a_probe_that_raises_anything_is_a_failed_probe(tmp_path: Path) -> None:
    """A probe raising what no socket would (a test's patched `socket`) counts as a failure; it
    used to end the monitor thread, and with it fail-fast and the claims' renewal."""

    class Unmocked(Exception):
        pass

    def probe(service: breaker.Service) -> None:
        raise Unmocked("socket.create_connection is patched by the suite")

    services = [breaker.Service("Valkey", "127.0.0.1", 1)]
    monitor = breaker.Monitor(services, tmp_path, every=0.001, probe_fn=probe)
    monitor.run()
    trip = breaker.read_trip(tmp_path)
    assert trip is not None
    assert "Unmocked: socket.create_connection is patched" in trip.message()


def test_testbed_sockets_ignore_a_patched_socket_module(
    server: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """probe() and cut_connections() use the socket functions captured at import."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network in tests")

    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    with pytest.raises(TimeoutError):  # it connected: the silent server never answers
        breaker.probe(breaker.Service("Valkey", "127.0.0.1", port), timeout=0.2)
    assert breaker.cut_connections(port, {"127.0.0.1"}) == 1
    monkeypatch.undo()
    client.close()
    server.close()


def test_the_monitor_runs_in_a_process_of_its_own(tmp_path: Path, server: socket.socket) -> None:
    """The monitor process trips on a refusing service; one that answers leaves no trip."""

    def answer() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(b"N")

    threading.Thread(target=answer, daemon=True).start()
    port = server.getsockname()[1]
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    refused = breaker.MonitorProcess(
        [breaker.Service("PostgreSQL", "127.0.0.1", 1)], tmp_path, every=0.01
    )
    answered = breaker.MonitorProcess(
        [breaker.Service("PostgreSQL", "127.0.0.1", port)], quiet, every=0.01
    )
    try:
        assert refused.proc.pid != os.getpid()
        assert refused.proc.wait(20) == 0  # a monitor that tripped has done its work
        trip = breaker.read_trip(tmp_path)
        assert trip is not None
        assert trip.kind == "service"
        assert trip.message().startswith("PostgreSQL at 127.0.0.1:1 stopped answering")
    finally:
        refused.stop()
        answered.stop()
        server.close()
    assert answered.proc.returncode is not None
    assert breaker.read_trip(quiet) is None


def test_a_lost_monitor_trips_the_breaker_naming_it(tmp_path: Path) -> None:
    """If the monitor dies, the run says so and fails instead of going on without fail-fast."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        monitor = breaker.MonitorProcess([breaker.Service("Valkey", "127.0.0.1", port)], tmp_path)
        try:
            os.kill(monitor.proc.pid, signal.SIGKILL)
            monitor._waiter.join(10)  # it writes the trip once the process is gone
            trip = breaker.read_trip(tmp_path)
        finally:
            monitor.stop()
    assert trip is not None
    assert trip.kind == "monitor"
    message = trip.message()
    assert message.startswith(f"testbed's service monitor (pid {monitor.proc.pid}) stopped at ")
    assert "exit code -9" in message
    assert "the rest of the run fails at once" in message


def test_default_intervals_are_bounded(tmp_path: Path) -> None:
    # 0 would spin a core; the tests pass their own intervals, so the defaults are checked here.
    assert breaker.Monitor([], tmp_path).every == breaker.PROBE_EVERY_S
    assert 0 < breaker.PROBE_EVERY_S <= 2
    assert breaker.Watch(tmp_path).every == breaker.WATCH_EVERY_S
    assert 0 < breaker.WATCH_EVERY_S < 1


def test_stop_waits_out_a_round_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A round may be in one probe per service (PostgreSQL, Valkey) when the stop comes.
    assert breaker.STOP_GRACE_S > 2 * breaker.PROBE_TIMEOUT_S
    probing, release = threading.Event(), threading.Event()

    def probe(service: breaker.Service) -> None:
        probing.set()
        release.wait(10)

    monitor = breaker.Monitor([breaker.Service("Valkey", "::1", 2)], tmp_path, probe_fn=probe)
    monitor.every = 0.001
    monitor.start()
    assert probing.wait(10)
    joined: list[float | None] = []
    join = monitor.join
    monkeypatch.setattr(monitor, "join", joined.append)
    monitor.stop()
    assert joined == [breaker.STOP_GRACE_S]
    release.set()
    join(10)
    assert not monitor.is_alive()


def test_testbeds_threads_are_daemons_named_after_it(tmp_path: Path) -> None:
    """A daemon never keeps a finished test process alive; the name tells a thread dump whose
    thread it is."""
    for thread in (breaker.Monitor([], tmp_path), breaker.Watch(tmp_path)):
        assert thread.daemon
        assert thread.name.startswith("testbed-breaker-")


def test_connect_tries_every_address_of_the_host(
    answering: Answering, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as refusing:  # bound, not listening: connecting is refused
        refusing.bind(("127.0.0.1", 0))
        addresses = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", refusing.getsockname()),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", answering.port)),
        ]
        monkeypatch.setattr(breaker, "_getaddrinfo", lambda *args: addresses)
        breaker.probe(breaker.Service("Valkey", "db.test", 1), timeout=5)
        assert answering.received == [b"PING\r\n"]
        monkeypatch.setattr(breaker, "_getaddrinfo", lambda *args: addresses[:1])
        with pytest.raises(ConnectionRefusedError):
            breaker.probe(breaker.Service("Valkey", "db.test", 1), timeout=5)
    monkeypatch.setattr(breaker, "_getaddrinfo", lambda *args: [])
    with pytest.raises(OSError, match=r"db\.test:1: no address to connect to"):
        breaker.probe(breaker.Service("Valkey", "db.test", 1), timeout=5)


# -- cutting connections, with a fake process table ---------------------------------------------
class _Addr(NamedTuple):
    ip: str
    port: int


class _Conn(NamedTuple):
    fd: int
    raddr: _Addr | tuple[()]


class _FakeSocket:
    """Stands in for socket.socket(fileno=fd): records shutdowns and detaches."""

    not_sockets = {9}  # socket() refuses these descriptors
    refuses_shutdown = {10}
    shut: ClassVar[list[int]] = []
    detached: ClassVar[list[int]] = []

    def __init__(self, *, fileno: int) -> None:
        if fileno in self.not_sockets:
            raise OSError(88, "Socket operation on non-socket")
        self.fd = fileno

    def shutdown(self, how: int) -> None:
        assert how == socket.SHUT_RDWR
        if self.fd in self.refuses_shutdown:
            raise OSError(107, "Transport endpoint is not connected")
        self.shut.append(self.fd)

    def detach(self) -> int:
        self.detached.append(self.fd)
        return self.fd


def _fake_connections(monkeypatch: pytest.MonkeyPatch, conns: list[_Conn] | Exception) -> None:
    def net_connections(kind: str) -> list[_Conn]:
        assert kind == "tcp"
        if isinstance(conns, Exception):
            raise conns
        return conns

    fake = types.SimpleNamespace(
        Process=lambda: types.SimpleNamespace(net_connections=net_connections),
        Error=psutil.Error,
    )
    monkeypatch.setattr(breaker, "psutil", fake)
    monkeypatch.setattr(breaker, "_Socket", _FakeSocket)
    monkeypatch.setattr(_FakeSocket, "shut", [])
    monkeypatch.setattr(_FakeSocket, "detached", [])


def test_cut_connections_cuts_the_services_connections_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_connections(
        monkeypatch,
        [
            _Conn(9, _Addr("127.0.0.1", 6380)),  # not a socket after all: skipped, not the end
            _Conn(-1, _Addr("127.0.0.1", 6380)),  # psutil knows no descriptor for it
            _Conn(5, ()),  # listening, no remote address
            _Conn(6, _Addr("127.0.0.1", 5433)),  # another service
            _Conn(7, _Addr("10.0.0.1", 6380)),  # another host
            _Conn(0, _Addr("127.0.0.1", 6380)),  # descriptor 0 is as good as any (stdin closed)
            _Conn(10, _Addr("127.0.0.1", 6380)),  # already gone: not counted
            _Conn(8, _Addr("::1", 6380)),
        ],
    )
    assert breaker.cut_connections(6380, {"127.0.0.1", "::1"}) == 2
    assert _FakeSocket.shut == [0, 8]
    assert _FakeSocket.detached == [0, 10, 8]  # every descriptor stays its owner's


def test_cut_connections_cuts_nothing_when_the_process_table_is_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_connections(monkeypatch, psutil.AccessDenied(os.getpid()))
    assert breaker.cut_connections(6380, {"127.0.0.1"}) == 0


# -- the watch, with a fake cut -----------------------------------------------------------------
class _Rounds(threading.Event):
    """The watch's stop event; counts the rounds that waited on it."""

    def __init__(self, until: int) -> None:
        super().__init__()
        self.until = until
        self.count = 0
        self.reached = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.count += 1
        if self.count >= self.until:
            self.reached.set()
        return super().wait(timeout)


def _write_trip(run_dir: Path, trip: breaker.Trip) -> None:
    (run_dir / breaker.TRIP_FILE).write_text(json.dumps(dataclasses.asdict(trip)))


def _watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[breaker.Watch, list[object]]:
    cuts: list[object] = []
    monkeypatch.setattr(breaker, "cut_connections", lambda port, hosts: cuts.append((port, hosts)))
    watch = breaker.Watch(tmp_path, every=0.001)
    watch.stopping = _Rounds(until=3)
    return watch, cuts


def test_watch_cuts_the_tripped_services_port_on_its_ipv6_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_trip(tmp_path, breaker.Trip("Valkey", "::1:6380", 6380, 1.0, "3 probes failed: x"))
    watch, cuts = _watch(tmp_path, monkeypatch)
    watch.start()
    assert isinstance(watch.stopping, _Rounds)
    assert watch.stopping.reached.wait(10)
    watch.stop()
    assert cuts[:3] == [(6380, {"::1"})] * 3  # every round: connections made since are cut too


def test_watch_cuts_nothing_when_the_monitor_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = breaker.Trip("testbed's service monitor (pid 7)", "", 0, 1.0, "exit code 1", "monitor")
    _write_trip(tmp_path, lost)
    watch, cuts = _watch(tmp_path, monkeypatch)
    watch.start()
    assert isinstance(watch.stopping, _Rounds)
    assert watch.stopping.reached.wait(10)
    watch.stop()
    assert watch.trip == lost
    assert cuts == []  # no service stopped answering: its connections are the tests' own


# -- the monitor process's controller, with a fake process --------------------------------------
class _FakeStdin:
    def __init__(self, proc: _FakeProc) -> None:
        self.proc = proc
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> int:
        self.written += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        if not self.proc.hangs:
            self.proc.exit(0)  # the monitor ends when its stdin closes


class _FakeProc:
    """A monitor process that ends when told (exit), when its stdin closes, or when killed."""

    pid = 4242

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        self.argv = argv
        self.kwargs = kwargs
        self.stdin = _FakeStdin(self)
        self.returncode: int | None = None
        self.ended = threading.Event()
        self.hangs = False  # ignores its stdin closing (until killed)
        self.waits: list[float | None] = []
        self.killed = False
        _FakeProc.started.append(self)

    started: ClassVar[list[_FakeProc]] = []

    def exit(self, code: int) -> None:
        self.returncode = code
        self.ended.set()

    def kill(self) -> None:
        self.killed = True
        self.exit(-9)

    def wait(self, timeout: float | None = None) -> int:
        self.waits.append(timeout)
        if timeout is not None and not self.ended.is_set():
            raise subprocess.TimeoutExpired(self.argv, timeout)
        self.ended.wait()
        assert self.returncode is not None
        return self.returncode


@pytest.fixture
def fake_process(monkeypatch: pytest.MonkeyPatch) -> type[_FakeProc]:
    """MonitorProcess starts a _FakeProc; the wall clock reads 1000.0."""
    monkeypatch.setattr(_FakeProc, "started", [])
    fake = types.SimpleNamespace(
        Popen=_FakeProc,
        PIPE=subprocess.PIPE,
        STDOUT=subprocess.STDOUT,
        TimeoutExpired=subprocess.TimeoutExpired,
    )
    monkeypatch.setattr(breaker, "subprocess", fake)
    clock = types.SimpleNamespace(
        time=lambda: 1000.0, strftime=time.strftime, localtime=time.localtime
    )
    monkeypatch.setattr(breaker, "time", clock)
    return _FakeProc


def _started(tmp_path: Path) -> tuple[breaker.MonitorProcess, _FakeProc]:
    service = breaker.Service("Valkey", "127.0.0.1", 6380)
    monitor = breaker.MonitorProcess([service], tmp_path)
    assert len(_FakeProc.started) == 1
    return monitor, _FakeProc.started[0]


def test_the_monitor_process_gets_its_spec_on_stdin(
    tmp_path: Path, fake_process: type[_FakeProc], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    services = [
        breaker.Service("PostgreSQL", "127.0.0.1", 5433),
        breaker.Service("Valkey", "::1", 6380, tls=True),
    ]
    url = "redis://:secret@127.0.0.1:6380/0"
    monitor = breaker.MonitorProcess(
        services, tmp_path, redis_url=url, run_id="1a2b3c4d", every=0.5
    )
    proc = fake_process.started[0]
    assert monitor.proc is proc
    assert proc.argv == [sys.executable, "-m", "testbed.run.breaker"]
    assert "secret" not in " ".join(proc.argv)
    assert proc.stdin.written.endswith(b"\n")
    assert json.loads(proc.stdin.written) == {
        "services": [
            {"name": "PostgreSQL", "host": "127.0.0.1", "port": 5433, "tls": False},
            {"name": "Valkey", "host": "::1", "port": 6380, "tls": True},
        ],
        "run_dir": str(tmp_path),
        "redis_url": url,
        "run_id": "1a2b3c4d",
        "every": 0.5,
    }
    kwargs = proc.kwargs
    assert kwargs["stdin"] == subprocess.PIPE
    assert kwargs["stderr"] == subprocess.STDOUT
    assert kwargs["stdout"].name == str(tmp_path / breaker.MONITOR_LOG)
    assert kwargs.get("close_fds", True)  # the test process's sockets and pipes stay its own
    # testbed imports in the monitor as here, even from a source tree that is not installed.
    src = Path(testbed.__file__).resolve().parent.parent
    assert kwargs["env"]["PYTHONPATH"] == f"{src}{os.pathsep}/elsewhere"
    monkeypatch.delenv("PYTHONPATH")
    breaker.MonitorProcess(services, tmp_path)
    assert fake_process.started[1].kwargs["env"]["PYTHONPATH"] == str(src)
    assert json.loads(fake_process.started[1].stdin.written)["every"] == breaker.PROBE_EVERY_S
    for started in fake_process.started:
        started.exit(0)


def test_a_monitor_that_ends_on_its_own_trips_the_breaker_with_its_last_words(
    tmp_path: Path, fake_process: type[_FakeProc]
) -> None:
    monitor, proc = _started(tmp_path)
    assert monitor._waiter.daemon
    assert monitor._waiter.name.startswith("testbed-breaker-")
    long_line = "x" * 300
    (tmp_path / breaker.MONITOR_LOG).write_bytes(
        f"Traceback (most recent call last):\n{long_line}\n\n".encode()
    )
    proc.exit(1)
    monitor._waiter.join(10)
    assert breaker.read_trip(tmp_path) == breaker.Trip(
        "testbed's service monitor (pid 4242)",
        "",
        0,
        1000.0,
        f"exit code 1: {'x' * 200}",
        kind="monitor",
    )


def test_a_lost_monitor_without_a_log_trips_with_its_exit_code(
    tmp_path: Path, fake_process: type[_FakeProc]
) -> None:
    monitor, proc = _started(tmp_path)
    (tmp_path / breaker.MONITOR_LOG).unlink()
    proc.exit(-9)
    monitor._waiter.join(10)
    trip = breaker.read_trip(tmp_path)
    assert trip is not None
    assert trip.reason == "exit code -9"


def test_an_undecodable_log_line_is_quoted_as_far_as_it_reads(
    tmp_path: Path, fake_process: type[_FakeProc]
) -> None:
    monitor, proc = _started(tmp_path)
    (tmp_path / breaker.MONITOR_LOG).write_bytes(b"first\nMemoryError \xff\n")
    proc.exit(1)
    monitor._waiter.join(10)
    trip = breaker.read_trip(tmp_path)
    assert trip is not None
    assert trip.reason == "exit code 1: MemoryError \ufffd"


def test_a_monitor_that_tripped_keeps_its_trip(
    tmp_path: Path, fake_process: type[_FakeProc]
) -> None:
    monitor, proc = _started(tmp_path)
    tripped = breaker.Trip("Valkey", "127.0.0.1:6380", 6380, 5.0, "3 probes failed: x")
    breaker.write_trip(tmp_path, tripped)
    proc.exit(0)
    monitor._waiter.join(10)
    assert breaker.read_trip(tmp_path) == tripped


def test_stop_closes_stdin_and_collects_the_monitor(
    tmp_path: Path, fake_process: type[_FakeProc]
) -> None:
    monitor, proc = _started(tmp_path)
    monitor.stop()
    assert proc.stdin.closed
    assert proc.waits[-1] == breaker.STOP_GRACE_S
    assert not proc.killed
    assert proc.returncode == 0
    assert breaker.read_trip(tmp_path) is None  # stopped on purpose: no trip


def test_stop_kills_a_monitor_that_does_not_end(
    tmp_path: Path, fake_process: type[_FakeProc]
) -> None:
    monitor, proc = _started(tmp_path)
    proc.hangs = True
    monitor.stop()
    assert proc.stdin.closed
    assert proc.killed
    assert proc.returncode == -9
    assert proc.waits[-2:] == [breaker.STOP_GRACE_S, None]  # the grace, then the collection
    assert breaker.read_trip(tmp_path) is None


# -- the monitor process's main, in this process --------------------------------------------
class _SpecStdin:
    """The monitor's stdin: one spec line, then open until closed."""

    def __init__(self, spec: dict[str, object]) -> None:
        self.line = json.dumps(spec) + "\n"
        self.reading = threading.Event()
        self.closed = threading.Event()

    def readline(self) -> str:
        return self.line

    def read(self) -> str:
        self.reading.set()
        self.closed.wait(10)
        return ""


class _MonitorRecord:
    """Stands in for Monitor in main(): records how it was made and run."""

    made: ClassVar[list[_MonitorRecord]] = []

    def __init__(
        self,
        services: list[breaker.Service],
        run_dir: Path,
        *,
        tick: Callable[[], None],
        every: float,
        stopping: threading.Event,
    ) -> None:
        self.services, self.run_dir, self.tick = services, run_dir, tick
        self.every, self.stopping = every, stopping
        self.ran = False
        _MonitorRecord.made.append(self)

    def run(self) -> None:
        self.ran = True


@pytest.fixture
def monitor_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[_SpecStdin, list[tuple[object, ...]]]]:
    """main() reads a spec for two services, runs a recorded Monitor, renews into a list."""
    spec = {
        "services": [
            {"name": "PostgreSQL", "host": "127.0.0.1", "port": 5433, "tls": False},
            {"name": "Valkey", "host": "::1", "port": 6380, "tls": True},
        ],
        "run_dir": str(tmp_path),
        "redis_url": "redis://127.0.0.1:6380/0",
        "run_id": "1a2b3c4d",
        "every": 0.5,
    }
    stdin = _SpecStdin(spec)
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(_MonitorRecord, "made", [])
    monkeypatch.setattr(breaker, "Monitor", _MonitorRecord)
    events: list[tuple[object, ...]] = []

    def renewer(redis_url: str, run_id: str) -> Callable[[], None]:
        events.append(("renewer", redis_url, run_id))
        return lambda: events.append(("renew",))

    monkeypatch.setattr(breaker, "_renewer", renewer)
    signals = types.SimpleNamespace(
        SIGINT=signal.SIGINT,
        SIGTERM=signal.SIGTERM,
        SIGHUP=signal.SIGHUP,
        SIG_IGN=signal.SIG_IGN,
        signal=lambda sig, handler: events.append(("signal", sig, handler)),
    )
    monkeypatch.setattr(breaker, "signal", signals)
    yield stdin, events
    stdin.closed.set()


def test_main_runs_the_monitor_the_spec_describes(
    tmp_path: Path, monitor_main: tuple[_SpecStdin, list[tuple[object, ...]]]
) -> None:
    _, events = monitor_main
    assert breaker.main() == 0
    (monitor,) = _MonitorRecord.made
    assert monitor.ran
    assert monitor.services == [
        breaker.Service("PostgreSQL", "127.0.0.1", 5433),
        breaker.Service("Valkey", "::1", 6380, tls=True),
    ]
    assert monitor.run_dir == tmp_path
    assert monitor.every == 0.5
    # Ctrl-C, a hang-up or a group SIGTERM is the run's to handle: it stops the monitor.
    ignored = [(signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, signal.SIG_IGN)]
    ignored.append((signal.SIGHUP, signal.SIG_IGN))
    assert [e[1:] for e in events if e[0] == "signal"] == ignored
    assert ("renewer", "redis://127.0.0.1:6380/0", "1a2b3c4d") in events


def test_main_stops_when_its_stdin_closes(
    monitor_main: tuple[_SpecStdin, list[tuple[object, ...]]],
) -> None:
    stdin, _ = monitor_main
    breaker.main()
    (monitor,) = _MonitorRecord.made
    (reader,) = [t for t in threading.enumerate() if t.name == "testbed-breaker-stdin"]
    assert reader.daemon  # a monitor whose stdin never closes still exits with its run
    assert stdin.reading.wait(10)
    assert not monitor.stopping.is_set()
    stdin.closed.set()
    assert monitor.stopping.wait(10)
    reader.join(10)


def test_main_ticks_renew_the_claims_and_notice_a_dead_run(
    monitor_main: tuple[_SpecStdin, list[tuple[object, ...]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, events = monitor_main
    breaker.main()
    (monitor,) = _MonitorRecord.made
    monitor.tick()
    assert events[-1] == ("renew",)
    assert not monitor.stopping.is_set()
    parent = os.getppid()
    monkeypatch.setattr(os, "getppid", lambda: 1 if parent != 1 else 2)  # adopted: the run died
    monitor.tick()
    assert monitor.stopping.is_set()


def test_main_without_valkey_renews_nothing(
    monitor_main: tuple[_SpecStdin, list[tuple[object, ...]]],
) -> None:
    stdin, events = monitor_main
    spec = json.loads(stdin.line)
    stdin.line = json.dumps({**spec, "redis_url": None, "run_id": None}) + "\n"
    breaker.main()
    (monitor,) = _MonitorRecord.made
    monitor.tick()
    assert not [e for e in events if e[0] in ("renewer", "renew")]


# -- renewing the run's Valkey claims -----------------------------------------------------------
def test_the_renewer_renews_at_once_then_every_renew_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [500.0]
    monkeypatch.setattr(breaker, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    clients: list[types.SimpleNamespace] = []
    renewed: list[tuple[object, str]] = []
    fail = [False]

    def run_redis(url: str) -> types.SimpleNamespace:
        assert url == "redis://127.0.0.1:6380/0"
        client = types.SimpleNamespace(closed=False)
        client.close = lambda: setattr(client, "closed", True)
        clients.append(client)
        return client

    def renew(client: object, run_id: str) -> int:
        if fail[0]:
            raise ConnectionError("Valkey is gone")
        renewed.append((client, run_id))
        return 1

    monkeypatch.setattr(sessions, "run_redis", run_redis)
    monkeypatch.setattr(allocation, "renew", renew)
    every = allocation.RENEW_EVERY_S
    tick = breaker._renewer("redis://127.0.0.1:6380/0", "1a2b3c4d")
    tick()  # the first tick renews at once
    assert renewed == [(clients[0], "1a2b3c4d")]
    assert clients[0].closed
    now[0] += every - 0.5
    tick()
    assert len(renewed) == 1  # not yet due
    now[0] += 0.5
    tick()
    assert len(renewed) == 2  # due again: RENEW_EVERY_S after the last renewal
    assert clients[1].closed
    now[0] += every
    fail[0] = True
    with pytest.raises(ConnectionError):
        tick()  # the monitor's round carries on (renewing is best effort)
    assert clients[2].closed
