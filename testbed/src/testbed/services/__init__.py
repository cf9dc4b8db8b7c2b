"""Service backends behind one interface; choose() picks one, acquire() starts or reuses them
under a lease: the one owner of the lifecycle, used by the pytest plugin and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from testbed.config import Settings
from testbed.errors import UsageError
from testbed.guard import redact
from testbed.report import say

if TYPE_CHECKING:
    from testbed.services.ownership import Lease


@dataclass(frozen=True)
class Endpoints:
    """Where the healthy E2E services answer."""

    backend: str
    database_url: str
    redis_url: str
    pg_version: str
    redis_version: str
    redis_databases: int


@dataclass(frozen=True)
class ServiceStatus:
    """What `status` reports: backend, endpoints when healthy, processes/containers, problems."""

    backend: str
    endpoints: Endpoints | None
    processes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    details: tuple[str, ...] = field(default=())
    orphaned: bool = False  # healthy, but the run that started them is gone (reap removes them)

    @property
    def healthy(self) -> bool:
        """True when both services answered a real query."""
        return self.endpoints is not None

    def render(self) -> str:
        """Human-readable multi-line report."""
        lines = [f"backend:    {self.backend}"]
        eps = self.endpoints
        if eps is not None:
            lines += [
                f"postgresql: PostgreSQL {eps.pg_version} at {redact(eps.database_url)}",
                f"valkey:     Valkey {eps.redis_version} at {redact(eps.redis_url)} "
                f"({eps.redis_databases} databases)",
            ]
        lines += [f"process:    {p}" for p in self.processes]
        lines += [f"            {d}" for d in self.details]
        lines += [f"problem:    {p}" for p in self.problems]
        lines.append("health:     " + ("healthy" if self.healthy else "not running / unhealthy"))
        return "\n".join(lines)


class ServiceBackend(Protocol):
    """One way to get PostgreSQL 16 + Valkey 8: native processes, compose, or given URLs.

    Every backend that starts something records who started it and which runs use it
    (testbed.services.ownership), so it stops only what it started, when nobody uses it.
    """

    name: str

    def ensure(self, lease: Lease) -> tuple[Endpoints, bool]:
        """Reuse healthy services of ours or start them, registering the lease; the bool is
        True when this call started them. Decided under the backend's lock."""
        ...

    def release(self, lease_id: str, *, keep: bool = False) -> bool:
        """End a lease (keep: hand the services to the user); stop them when it was the last
        one. True if they stopped."""
        ...

    def down(self) -> str:
        """`make down`: end the user's lease and stop the services unless a live run uses
        them; one line saying what happened."""
        ...

    def running(self) -> Endpoints | None:
        """Healthy services of ours, or None."""
        ...

    def status(self) -> ServiceStatus:
        """Report backend, versions, ports, processes, leases and health."""
        ...

    def reap(self) -> list[str]:
        """Remove what dead runs left behind; return what was removed."""
        ...

    def logs(self) -> dict[str, Path]:
        """Server logs by service name (their tails are shown, and they are kept, when a
        service dies); empty when the backend has none."""
        ...


def resolve_backend_name(
    settings: Settings, *, recorded_first: bool = False, starting: bool = False
) -> str:
    """The one backend selection: explicit, else this checkout's recorded instance (whatever
    URLs the environment holds for it, e.g. after `eval "$(make env)"`), else external if URLs
    are set, docker if an engine answers and can run the compose file (Engine >= 25, Compose
    v2, the images), else native. recorded_first (`down`): this checkout's recorded instance
    wins even over an explicit E2E_BACKEND. starting: the services are about to start, so
    docker may pull images, and a fallback to native says why in one line."""
    from testbed.services import docker
    from testbed.services.ownership import read_record

    record = read_record(settings.state_dir)
    recorded = record.get("backend")
    if recorded_first and recorded in ("native", "docker"):
        return str(recorded)
    if settings.backend != "auto":
        return settings.backend
    if recorded in ("native", "docker"):
        # Only its own URLs (what `make env` prints) mean "this instance"; any other URL, even
        # at the same port (another database), is the user's explicit external target.
        urls = ((settings.database_url, "database_url"), (settings.redis_url, "redis_url"))
        if all(url is None or url == record.get(key) for url, key in urls):
            return str(recorded)
    if settings.database_url or settings.redis_url:
        return "external"
    if not docker.engine_answers():
        return "native"
    why = docker.unavailable(settings, fetch=starting)
    if why is None:
        return "docker"
    if starting:
        say(f"auto: using the native backend: {why}")
    return "native"


def choose(
    settings: Settings, *, recorded_first: bool = False, starting: bool = False
) -> ServiceBackend:
    """The backend for these settings (see resolve_backend_name)."""
    name = resolve_backend_name(settings, recorded_first=recorded_first, starting=starting)
    if name == "external":
        from testbed.services.external import ExternalBackend

        return ExternalBackend(settings)
    if name == "docker":
        from testbed.services.docker import DockerBackend

        return DockerBackend(settings)
    if name == "native":
        from testbed.services.native import NativeBackend

        return NativeBackend(settings)
    raise UsageError(f"unknown backend {name!r}; valid: auto, native, docker, external")


@dataclass
class Hold:
    """A lease this process holds on the services: release() ends it (and stops them when it
    was the last one)."""

    backend: ServiceBackend
    lease: Lease
    endpoints: Endpoints
    started: bool

    def release(self, *, keep: bool = False) -> bool:
        """End the lease; True if that stopped the services."""
        return self.backend.release(self.lease.id, keep=keep)


def acquire(settings: Settings, *, kind: str = "run", holder_pid: int | None = None) -> Hold:
    """The one entry to the services (plugin and CLI): choose the backend, then start or reuse
    them under a lease. kind "run": held while holder_pid (default: this process) lives;
    "user" (`make up`): kept until `make down`."""
    from testbed.services.ownership import USER, holder_identity, new_lease

    if kind == USER and holder_pid is not None:
        raise UsageError("an owner pid only makes sense for a run's services, not the user's")
    holder = holder_identity(holder_pid) if kind != USER else None
    lease = new_lease(kind, holder)
    backend = choose(settings, starting=True)
    _refuse_other_backend(settings, backend.name)
    endpoints, started = backend.ensure(lease)
    return Hold(backend, lease, endpoints, started)


def _refuse_other_backend(settings: Settings, name: str) -> None:
    """This checkout's services run on one backend at a time: one in use is never replaced
    (its record would be lost, and with it who uses what)."""
    from testbed.errors import InUse
    from testbed.services.ownership import read_record

    record = read_record(settings.state_dir)
    recorded = record.get("backend")
    live = [x for x in record.leases() if x.alive()]
    if recorded in ("native", "docker") and recorded != name and live:
        raise InUse(
            f"this checkout's {recorded} services are in use by {live[0].describe()}; "
            f"use E2E_BACKEND={recorded}, or `make down` first (and wait for that run)"
        )


def ensure_up(
    settings: Settings, *, owner: str = "run", owner_pid: int | None = None
) -> tuple[Endpoints, bool]:
    """acquire() for callers that only need the endpoints: the lease ends with the holder
    process (a run) or at `make down` (owner "user")."""
    hold = acquire(settings, kind=owner, holder_pid=owner_pid)
    return hold.endpoints, hold.started


__all__ = [
    "Endpoints",
    "Hold",
    "ServiceBackend",
    "ServiceStatus",
    "acquire",
    "choose",
    "ensure_up",
    "resolve_backend_name",
]
