"""The breaker without servers: when it trips, what it says, and cutting a blocked connection."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import socket
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.run import breaker


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
                if data == breaker._SSL_REQUEST:
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
    assert answering.received == [breaker._SSL_REQUEST if name == "PostgreSQL" else b"PING\r\n"]


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


def _wait_trip(run_dir: Path, within: float) -> breaker.Trip | None:
    deadline = time.monotonic() + within
    while (trip := breaker.read_trip(run_dir)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return trip


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
    refused = breaker.MonitorProcess([breaker.Service("PostgreSQL", "127.0.0.1", 1)], tmp_path)
    answered = breaker.MonitorProcess([breaker.Service("PostgreSQL", "127.0.0.1", port)], quiet)
    try:
        assert refused.proc.pid != os.getpid()
        trip = _wait_trip(tmp_path, 20)
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
            trip = _wait_trip(tmp_path, 10)
        finally:
            monitor.stop()
    assert trip is not None
    assert trip.kind == "monitor"
    message = trip.message()
    assert f"testbed's service monitor (pid {monitor.proc.pid}) stopped" in message
    assert "exit code -9" in message
    assert "the rest of the run fails at once" in message


def test_default_intervals_are_bounded(tmp_path: Path) -> None:
    # 0 would spin a core; the tests pass their own intervals, so the defaults are checked here.
    assert breaker.Monitor([], tmp_path).every == breaker.PROBE_EVERY_S
    assert 0 < breaker.PROBE_EVERY_S <= 2
    assert breaker.Watch(tmp_path).every == breaker.WATCH_EVERY_S
    assert 0 < breaker.WATCH_EVERY_S < 1
