"""The breaker without servers: when it trips, what it says, and cutting a blocked connection."""

from __future__ import annotations

import socket
import threading
import time
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
