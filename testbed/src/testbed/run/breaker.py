"""Fail fast when a service stops answering: the controller probes both services every second;
after a few consecutive failed probes it trips the breaker (a file in the run's directory).
Every test process watches that file: from then on its tests fail at once naming the service
and since when, and its own connections to that service are cut so nothing waits out a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 2.0
TRIP_AFTER = 3  # consecutive failed probes
WATCH_EVERY_S = 0.2
TRIP_FILE = "breaker.json"
# PostgreSQL's SSLRequest: the server answers one byte ('S' or 'N') without a login, and logs
# nothing when the client then hangs up; a frozen or dead server cannot answer it.
_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


@dataclass(frozen=True)
class Service:
    """A service to watch: its name and address."""

    name: str
    host: str
    port: int
    tls: bool = False  # rediss://: a plain PING would get no answer; connecting is the probe

    @classmethod
    def from_url(cls, name: str, url: str) -> Service:
        """Host and port of a postgresql:// or redis(s):// URL."""
        parts = urlsplit(url)
        default = 5432 if name == "PostgreSQL" else 6379
        return cls(
            name, parts.hostname or "127.0.0.1", parts.port or default, parts.scheme == "rediss"
        )

    @property
    def address(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Trip:
    """Why the breaker tripped: which service, since when, after what."""

    service: str
    address: str
    port: int
    since: float  # wall clock of the first failed probe in the run of failures
    reason: str

    def message(self) -> str:
        """One line for every test that fails because of it."""
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        return (
            f"{self.service} at {self.address} stopped answering at {when} ({self.reason}); "
            "the rest of the run fails at once"
        )


def probe(service: Service, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise OSError unless the server answers a minimal request within timeout."""
    with socket.create_connection((service.host, service.port), timeout=timeout) as sock:
        if service.tls:
            return
        sock.settimeout(timeout)
        sock.sendall(_SSL_REQUEST if service.name == "PostgreSQL" else b"PING\r\n")
        if not sock.recv(1):
            raise ConnectionError("closed the connection without answering")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{TRIP_AFTER} probes timed out after {PROBE_TIMEOUT_S:g} s each"
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return f"{TRIP_AFTER} probes failed: {why}"


def read_trip(run_dir: Path | str | None) -> Trip | None:
    """The trip recorded in run_dir, if the breaker tripped."""
    if not run_dir:
        return None
    try:
        data = json.loads((Path(run_dir) / TRIP_FILE).read_text())
        return Trip(**data)
    except (OSError, ValueError, TypeError):
        return None


class Monitor(threading.Thread):
    """Controller: probe the services; trip the breaker after TRIP_AFTER failures in a row."""

    def __init__(
        self,
        services: list[Service],
        run_dir: Path,
        *,
        tick: Callable[[], None] | None = None,
        every: float = PROBE_EVERY_S,
        probe_fn: Callable[[Service], None] = probe,
    ) -> None:
        super().__init__(name="testbed-breaker-monitor", daemon=True)
        self.services = services
        self.run_dir = run_dir
        self.tick = tick
        self.every = every
        self.probe_fn = probe_fn
        self.stopping = threading.Event()
        self.trip: Trip | None = None

    def run(self) -> None:
        """Probe until stopped or tripped."""
        failures = {s.name: 0 for s in self.services}
        first: dict[str, float] = {}
        while not self.stopping.wait(self.every):
            for service in self.services:
                try:
                    self.probe_fn(service)
                except OSError as exc:
                    failures[service.name] += 1
                    first.setdefault(service.name, time.time())
                    if failures[service.name] >= TRIP_AFTER:
                        self._trip(service, first[service.name], _reason(exc))
                        return
                else:
                    failures[service.name] = 0
                    first.pop(service.name, None)
            if self.tick is not None:
                with contextlib.suppress(Exception):  # renewing is best effort
                    self.tick()

    def _trip(self, service: Service, since: float, reason: str) -> None:
        self.trip = Trip(service.name, service.address, service.port, since, reason)
        tmp = self.run_dir / f"{TRIP_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self.trip)))
        tmp.replace(self.run_dir / TRIP_FILE)

    def stop(self) -> None:
        """End the probing (at the end of the run)."""
        self.stopping.set()
        if self.is_alive():
            self.join(PROBE_TIMEOUT_S * 2 + 1)


def cut_connections(port: int, hosts: set[str]) -> int:
    """Shut down this process's TCP connections to port on hosts (blocked reads return at once)."""
    cut = 0
    try:
        conns = psutil.Process().net_connections(kind="tcp")
    except psutil.Error:
        return 0
    for conn in conns:
        raddr = conn.raddr
        if not raddr or raddr.port != port or conn.fd < 0 or raddr.ip not in hosts:
            continue
        try:
            sock = socket.socket(fileno=conn.fd)
        except OSError:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
            cut += 1
        except OSError:
            pass
        finally:
            sock.detach()  # the fd stays the client's: it sees a closed connection
    return cut


def _addresses(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


class Watch(threading.Thread):
    """Test process: notice a trip; from then on keep cutting connections to that service."""

    def __init__(self, run_dir: Path | str, every: float = WATCH_EVERY_S) -> None:
        super().__init__(name="testbed-breaker-watch", daemon=True)
        self.run_dir = Path(run_dir)
        self.every = every
        self.trip: Trip | None = None
        self.pid = os.getpid()
        self.stopping = threading.Event()

    def run(self) -> None:
        """Poll the trip file; after a trip, cut new connections as they appear."""
        hosts: set[str] = set()
        while True:
            if self.trip is None:
                self.trip = read_trip(self.run_dir)
                if self.trip is not None:
                    hosts = _addresses(self.trip.address.rsplit(":", 1)[0])
            if self.trip is not None:
                cut_connections(self.trip.port, hosts)
            if self.stopping.wait(self.every):
                return

    def stop(self) -> None:
        """End the watching (a process that lives on after its tests, or a test of the watch)."""
        self.stopping.set()
        if self.is_alive():
            self.join(self.every * 2 + 1)
