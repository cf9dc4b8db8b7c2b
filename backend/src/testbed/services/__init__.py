"""Service backends behind one interface; choose() picks one, ensure_up() starts or reuses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from testbed.config import Settings
from testbed.errors import UsageError
from testbed.guard import redact

if TYPE_CHECKING:
    from testbed.services.owner import OwnerKind


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
                f"valkey:     Valkey {eps.redis_version} at {eps.redis_url} "
                f"({eps.redis_databases} databases)",
            ]
        lines += [f"process:    {p}" for p in self.processes]
        lines += [f"            {d}" for d in self.details]
        lines += [f"problem:    {p}" for p in self.problems]
        lines.append("health:     " + ("healthy" if self.healthy else "not running / unhealthy"))
        return "\n".join(lines)


class ServiceBackend(Protocol):
    """One way to get PostgreSQL 16 + Valkey 8: native processes, compose, or given URLs."""

    name: str

    def up(self) -> Endpoints:
        """Start the services (idempotent: reuses healthy services of ours) and wait for health."""
        ...

    def down(self) -> None:
        """Remove everything up() made: processes, data dirs, containers, volumes."""
        ...

    def status(self) -> ServiceStatus:
        """Report backend, versions, ports, processes and health."""
        ...

    def running(self) -> Endpoints | None:
        """Healthy services of ours, or None."""
        ...

    def reap(self) -> list[str]:
        """Remove what dead runs left behind; return what was removed."""
        ...


def resolve_backend_name(settings: Settings) -> str:
    """The concrete backend for these settings (resolves auto)."""
    from testbed.services import docker

    if settings.backend != "auto":
        return settings.backend
    if settings.database_url or settings.redis_url:
        return "external"
    if docker.engine_answers():
        return "docker"
    return "native"


def choose(settings: Settings) -> ServiceBackend:
    """The backend for these settings; auto: external if URLs, docker if an engine, else native."""
    name = resolve_backend_name(settings)
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


def ensure_up(
    settings: Settings, *, owner: OwnerKind = "run", owner_pid: int | None = None
) -> tuple[Endpoints, bool]:
    """Reuse healthy services of ours or start them; the bool is True if THIS call started them
    (or adopted the services of a killed run, which this caller must then take down).

    owner "run" (a test run): the services belong to owner_pid (default: this process) and are
    reaped once it is gone; "user" (`python -m testbed up`): kept until `make down`.
    """
    from testbed.services.native import NativeBackend
    from testbed.services.owner import USER, make_owner

    backend = choose(settings)
    if isinstance(backend, NativeBackend):
        record = make_owner(owner, owner_pid)
        if settings.keep and owner == "run":
            record = USER  # --e2e-keep: the run leaves them running on purpose
        return backend.ensure(owner=record)
    ensure = getattr(backend, "ensure", None)
    if ensure is not None:
        # Decided under the backend's lock: of two racing callers, exactly one gets True.
        result: tuple[Endpoints, bool] = ensure()
        return result
    found = backend.running()
    if found is not None:
        return found, False
    return backend.up(), True


__all__ = [
    "Endpoints",
    "ServiceBackend",
    "ServiceStatus",
    "choose",
    "ensure_up",
    "resolve_backend_name",
]
