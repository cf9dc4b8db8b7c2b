"""The breaker without servers: when it trips, what it says, and cutting a blocked connection."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from testbed import breaker


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
    monitor = _monitor(tmp_path, {"PostgreSQL": flaky, "Valkey": []})
    monitor.start()
    time.sleep(0.3)
    monitor.stop()
    assert breaker.read_trip(tmp_path) is None
    assert breaker.read_trip(None) is None


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


def test_cut_connections_ends_a_blocked_read(server: socket.socket) -> None:
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(client.recv(1)))
    reader.start()
    time.sleep(0.05)
    assert breaker.cut_connections(port, {"127.0.0.1"}) == 1
    reader.join(2)
    assert got == [b""]  # the blocked read returned at once, as on a closed connection
    assert client.fileno() >= 0  # the descriptor is still the client's
    client.close()
    server.close()


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
