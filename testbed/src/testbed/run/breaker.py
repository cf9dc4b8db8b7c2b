"""Fail fast when a service stops answering: a monitor process of the run's own probes both
services every second; after a few consecutive failed probes it trips the breaker (a file in
the run's directory). Every test process watches that file: from then on its tests fail at once
naming the service and since when, and its own connections to that service are cut so nothing
waits out a timeout.

The monitor runs outside the test processes and testbed's own socket calls use the functions
captured when the plugin imported this module: code under test may patch `socket` (httpretty,
socket-blocking fixtures), freeze clocks or raise anything, and the breaker still holds. If the
monitor itself stops, the breaker trips naming it: the run never goes on without fail-fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
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
# How long stop() waits for the monitor: a round under way may be in one probe per service
# (PostgreSQL and Valkey) before it sees the stop.
STOP_GRACE_S = 2 * PROBE_TIMEOUT_S + 1
WATCH_EVERY_S = 0.2
TRIP_FILE = "breaker.json"
# PostgreSQL's SSLRequest: the server answers one byte ('S' or 'N') without a login, and logs
# nothing when the client then hangs up; a frozen or dead server cannot answer it.
_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
MONITOR_LOG = "monitor.log"
# Captured at import (the plugin's, before any conftest or test module): what tests patch is
# the module attribute, never these objects.
_Socket = socket.socket
_getaddrinfo = socket.getaddrinfo


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
    kind: str = "service"  # or "monitor": the monitor itself stopped

    def message(self) -> str:
        """One line for every test that fails because of it."""
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        if self.kind == "monitor":
            return (
                f"{self.service} stopped at {when} ({self.reason}); without it a service that "
                "stops answering would go unnoticed, so the rest of the run fails at once"
            )
        return (
            f"{self.service} at {self.address} stopped answering at {when} ({self.reason}); "
            "the rest of the run fails at once"
        )


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """socket.create_connection on the captured socket functions."""
    last: OSError | None = None
    for family, kind, proto, _, address in _getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = _Socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    raise last or OSError(f"{host}:{port}: no address to connect to")


def probe(service: Service, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise OSError unless the server answers a minimal request within timeout."""
    sock = _connect(service.host, service.port, timeout)
    try:
        if service.tls:
            return
        sock.sendall(_SSL_REQUEST if service.name == "PostgreSQL" else b"PING\r\n")
        if not sock.recv(1):
            raise ConnectionError("closed the connection without answering")
    finally:
        sock.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{TRIP_AFTER} probes timed out after {PROBE_TIMEOUT_S:g} s each"
    if not isinstance(exc, OSError):
        return f"{TRIP_AFTER} probes failed: {type(exc).__name__}: {exc}"
    return f"{TRIP_AFTER} probes failed: {exc.strerror or exc}"


def read_trip(run_dir: Path | str | None) -> Trip | None:
    """The trip recorded in run_dir, if the breaker tripped."""
    if not run_dir:
        return None
    try:
        data = json.loads((Path(run_dir) / TRIP_FILE).read_text())
        return Trip(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_trip(run_dir: Path, trip: Trip) -> None:
    """Record the trip where every test process looks (atomically)."""
    tmp = run_dir / f"{TRIP_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(trip)))
    tmp.replace(run_dir / TRIP_FILE)


class Monitor(threading.Thread):
    """Probe the services; trip the breaker after TRIP_AFTER failures in a row (the loop of the
    monitor process, a thread in unit tests)."""

    def __init__(
        self,
        services: list[Service],
        run_dir: Path,
        *,
        tick: Callable[[], None] | None = None,
        every: float = PROBE_EVERY_S,
        probe_fn: Callable[[Service], None] = probe,
        stopping: threading.Event | None = None,
    ) -> None:
        super().__init__(name="testbed-breaker-monitor", daemon=True)
        self.services = services
        self.run_dir = run_dir
        self.tick = tick
        self.every = every
        self.probe_fn = probe_fn
        self.stopping = stopping or threading.Event()
        self.trip: Trip | None = None

    def run(self) -> None:
        """Probe until stopped or tripped."""
        failures = {s.name: 0 for s in self.services}
        first: dict[str, float] = {}
        while not self.stopping.wait(self.every):
            for service in self.services:
                try:
                    self.probe_fn(service)
                except Exception as exc:  # whatever went wrong, the service did not answer
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
        write_trip(self.run_dir, self.trip)

    def stop(self) -> None:
        """End the probing (at the end of the run)."""
        self.stopping.set()
        if self.is_alive():
            self.join(STOP_GRACE_S)


class MonitorProcess:
    """Controller: the Monitor in a process of its own (`python -m testbed.run.breaker`), so no test
    reaches it; it renews the run's Valkey database claims too. It ends when stop() closes its
    stdin, or when this process dies; if it ends otherwise, the breaker trips naming it."""

    def __init__(
        self,
        services: list[Service],
        run_dir: Path,
        *,
        redis_url: str | None = None,
        run_id: str | None = None,
        every: float = PROBE_EVERY_S,
    ) -> None:
        import testbed

        self.run_dir = run_dir
        self._stopping = False
        spec = {
            "services": [asdict(s) for s in services],
            "run_dir": str(run_dir),
            "redis_url": redis_url,  # secret: sent on stdin, never in argv
            "run_id": run_id,
            "every": every,
        }
        src = str(Path(testbed.__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
        }
        with (run_dir / MONITOR_LOG).open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
            )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
        self.proc.stdin.flush()
        self._waiter = threading.Thread(
            target=self._watch, name="testbed-breaker-monitor-waiter", daemon=True
        )
        self._waiter.start()

    def _watch(self) -> None:
        code = self.proc.wait()
        if self._stopping or read_trip(self.run_dir) is not None:
            return
        try:
            lines = (self.run_dir / MONITOR_LOG).read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        why = f"exit code {code}" + (f": {lines[-1][:200]}" if lines else "")
        name = f"testbed's service monitor (pid {self.proc.pid})"
        with contextlib.suppress(OSError):  # the run dir is gone: the run is over anyway
            write_trip(self.run_dir, Trip(name, "", 0, time.time(), why, kind="monitor"))

    def stop(self) -> None:
        """End the monitor (at the end of the run) and collect it."""
        self._stopping = True
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._waiter.join(1)


def _renewer(redis_url: str, run_id: str) -> Callable[[], None]:
    """Keep the run's Valkey database claims alive (every RENEW_EVERY_S): the first call
    renews, later ones once RENEW_EVERY_S has passed since the last renewal."""
    from testbed.isolation.sessions import run_redis
    from testbed.run import allocation

    due = [time.monotonic()]

    def renew() -> None:
        now = time.monotonic()
        if now < due[0]:
            return
        due[0] = now + allocation.RENEW_EVERY_S
        client = run_redis(redis_url)
        try:
            allocation.renew(client, run_id)
        finally:
            client.close()

    return renew


def main() -> int:
    """The monitor process: read the spec from stdin, probe until stdin closes or it trips."""
    # Ctrl-C, a hang-up or a group SIGTERM goes to the run, which then stops us; dying first
    # would read as a lost monitor.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    spec = json.loads(sys.stdin.readline())
    parent = os.getppid()
    stopping = threading.Event()

    def until_closed() -> None:
        sys.stdin.read()
        stopping.set()

    threading.Thread(target=until_closed, name="testbed-breaker-stdin", daemon=True).start()
    renew = _renewer(spec["redis_url"], spec["run_id"]) if spec.get("redis_url") else None

    def tick() -> None:
        if os.getppid() != parent:  # the run died without closing our stdin
            stopping.set()
        if renew is not None:
            renew()

    services = [Service(**s) for s in spec["services"]]
    run_dir = Path(spec["run_dir"])
    Monitor(services, run_dir, tick=tick, every=spec["every"], stopping=stopping).run()
    return 0


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
            sock = _Socket(fileno=conn.fd)
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
        return {str(info[4][0]) for info in _getaddrinfo(host, None)}
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
        cut: tuple[int, set[str]] | None = None  # the tripped service's port and addresses
        while True:
            if self.trip is None:
                self.trip = read_trip(self.run_dir)
                if self.trip is not None and self.trip.kind == "service":
                    cut = (self.trip.port, _addresses(self.trip.address.rsplit(":", 1)[0]))
            if cut is not None:
                with contextlib.suppress(Exception):  # keep watching whatever a test patched
                    cut_connections(*cut)
            if self.stopping.wait(self.every):
                return

    def stop(self) -> None:
        """End the watching (a process that lives on after its tests, or a test of the watch)."""
        self.stopping.set()
        if self.is_alive():
            self.join(self.every * 2 + 1)


if __name__ == "__main__":
    sys.exit(main())
